"""BILLmanager's own API client, ``sbin/mgrctl -m billmgr -o xml FUNC key=value ...``.

Run as an argument list (no shell, so no value is ever interpreted); the answer is parsed with the
defused parser and an ``<error>`` in it becomes an ``MgrctlError`` with BILLmanager's own message.
"""

from . import xmlio
from .errors import InputError, MgrctlError

DEFAULT_TIMEOUT = 120


def arguments(config, func, params):
    """The argument list for one call; NUL bytes, which no argument can hold, are dropped."""
    args = [config.path("sbin", "mgrctl"), "-m", "billmgr", "-o", "xml", func]
    args += ["%s=%s" % (key, str(value).replace("\0", "")) for key, value in params.items()]
    return args


def call(config, func, timeout=DEFAULT_TIMEOUT, **params):
    """Call ``func`` with ``params``; return the parsed answer, or raise MgrctlError saying why not."""
    import subprocess   # here, not at the top: importers must keep --command features light
    args = arguments(config, func, params)
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MgrctlError("BILLmanager did not answer %s within %d seconds" % (func, timeout), obj=func)
    except OSError as e:
        raise MgrctlError("Cannot run %s: %s" % (args[0], e), obj=func)
    try:
        answer = xmlio.parse(done.stdout, "the answer of mgrctl %s" % func)
    except InputError as e:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise MgrctlError("%s (exit status %d%s)" % (e.message, done.returncode, ", " + detail if detail else ""),
                          obj=func)
    error = answer.find("error")
    if error is not None:
        message = xmlio.text(error, "msg") or error.get("type", "error")
        raise MgrctlError("BILLmanager refused %s: %s" % (func, message), obj=func, value=error.get("type"))
    if done.returncode != 0:
        raise MgrctlError("mgrctl %s ended with exit status %d" % (func, done.returncode), obj=func)
    return answer
