"""BILLmanager's own API client, ``sbin/mgrctl -m billmgr -o xml FUNC key=value ...``.

Run as ISPsystem's Python library runs it [src]: from the MGR5 root, with ``SSH_CONNECTION`` set to
the calling module's name (BILLmanager records it where it would record a remote address), and as
an argument list (no shell, so no value is ever interpreted). The answer is parsed with the defused
parser and an ``<error>`` in it becomes an ``MgrctlError`` with BILLmanager's own message.
``paramlist`` reads BILLmanager's own parameters (the database settings among them) in JSON.
"""

import os
import sys

from . import xmlio
from .errors import InputError, MgrctlError

DEFAULT_TIMEOUT = 120
PARAMLIST_TIMEOUT = 30


def caller_name(caller=None):
    """The name mgrctl is told in SSH_CONNECTION: ``caller``, else the running script's (``ntjabber``)."""
    return caller or os.path.basename(sys.argv[0] or "") or "mgrnotify"


def arguments(config, func, params, output=("-o", "xml")):
    """The argument list for one call; NUL bytes, which no argument can hold, are dropped."""
    args = [config.path("sbin", "mgrctl"), "-m", "billmgr"] + list(output) + [func]
    args += ["%s=%s" % (key, str(value).replace("\0", "")) for key, value in params.items()]
    return args


def _run(config, args, func, timeout, caller):
    """Run one mgrctl command line; its CompletedProcess, or MgrctlError when it cannot run or answer."""
    import subprocess   # here, not at the top: importers must keep --command features light
    env = dict(os.environ, SSH_CONNECTION=caller_name(caller))
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=config.root, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MgrctlError("BILLmanager did not answer %s within %d seconds" % (func, timeout), obj=func)
    except FileNotFoundError:
        raise MgrctlError("There is no %s: is BILLmanager installed in %s?" % (args[0], config.root), obj=func)
    except OSError as e:
        raise MgrctlError("Cannot run %s: %s" % (args[0], e), obj=func)


def _stderr(done):
    """mgrctl's own message on stderr, shortened, as ``, message`` (empty when it printed none)."""
    detail = done.stderr.decode("utf-8", "replace").strip()
    return ", " + detail[-300:] if detail else ""


def call(config, func, timeout=DEFAULT_TIMEOUT, caller=None, **params):
    """Call ``func`` with ``params`` on behalf of module ``caller``; the parsed answer, or MgrctlError saying
    why not."""
    done = _run(config, arguments(config, func, params), func, timeout, caller)
    try:
        answer = xmlio.parse(done.stdout, "the answer of mgrctl %s" % func)
    except InputError as e:
        raise MgrctlError("%s (exit status %d%s)" % (e.message, done.returncode, _stderr(done)), obj=func)
    error = answer.find("error")
    if error is not None:
        message = xmlio.text(error, "msg") or error.get("type", "error")
        raise MgrctlError("BILLmanager refused %s: %s" % (func, message), obj=func, value=error.get("type"))
    if done.returncode != 0:
        raise MgrctlError("mgrctl %s ended with exit status %d" % (func, done.returncode), obj=func)
    return answer


def paramlist(config, caller=None, timeout=PARAMLIST_TIMEOUT):
    """BILLmanager's parameters (``DBHost``, ``DBName``, ...) as a dict, from ``mgrctl -m billmgr paramlist``
    in JSON, as ISPsystem's Python library reads them [src]; MgrctlError saying why not.

    The answer may hold the database password: it is read from stdout only, and never logged nor put
    into an error message.
    """
    done = _run(config, arguments(config, "paramlist", {"out": "bjson"}, output=()), "paramlist", timeout, caller)
    if done.returncode != 0:
        raise MgrctlError("mgrctl paramlist ended with exit status %d%s" % (done.returncode, _stderr(done)),
                          obj="paramlist")
    return parse_paramlist(done.stdout)


def parse_paramlist(output):
    """The parameters in a ``paramlist`` answer, as a dict of strings; MgrctlError for an error answer.

    [ours] A guess at the shape, taken tolerantly: ISPsystem's library reads ``out=bjson`` as
    ``{"elem": [{"DBName": "billmgr"}, ...]}`` [src]; also taken are the same inside ``{"doc": ...}``
    with values as ``{"$": "..."}`` (mgrctl's plain ``json``), a flat object ``{"DBName": "billmgr"}``,
    and ``Key=value`` text lines. Nothing of the answer goes into a message: it may hold the password.
    """
    import json
    text = output.decode("utf-8", "replace").strip()
    if not text.startswith("{"):
        params = {}
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            if equals and key.strip().isidentifier():
                params[key.strip()] = value.strip()
        return params
    try:
        answer = json.loads(text)
    except ValueError:
        raise MgrctlError("The answer of mgrctl paramlist is not valid JSON", obj="paramlist")
    if isinstance(answer.get("doc"), dict):
        answer = answer["doc"]
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        message = _scalar(error.get("msg")) or _scalar(error.get("type")) or _scalar(error.get("$type")) or "error"
        raise MgrctlError("BILLmanager refused paramlist: %s" % message, obj="paramlist")
    elems = answer.get("elem", [answer])
    params = {}
    for elem in elems if isinstance(elems, list) else [elems]:
        if isinstance(elem, dict):
            for key, value in elem.items():
                value = _scalar(value)
                if value is not None and not key.startswith("$"):
                    params[key] = value
    return params


def _scalar(value):
    """A JSON value as text: a string or number as it is, ``{"$": "x"}`` as "x", anything else None."""
    if isinstance(value, dict):
        value = value.get("$")
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, (str, int, float)) else None
