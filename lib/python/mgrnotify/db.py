"""BILLmanager's MySQL/MariaDB database through the ``mariadb``/``mysql`` command-line client.

No driver is needed on the server: the client BILLmanager itself depends on is always there. The
connection settings (``DBHost``, ``DBUser``, ``DBPassword``, ``DBName``, ``DBSocket``, ``DBPort`` of
billmgr.conf, else of BILLmanager's ``mgrctl -m billmgr paramlist``) go into a defaults file only the
client reads -- never onto the command line, where ``ps`` would show them, and never onto the disk.
Statements go to the client on stdin; values are bound here (``?`` placeholders) as hexadecimal
literals, so no value can change a statement's meaning.
Results are read in the client's ``--xml`` form, where tabs, newlines, NULL and any text survive
(one exception: the client writes a NUL byte inside a value as a space). A float NaN or infinity is
refused with ValueError: SQL has no literal for it, and storing NULL instead would hide the defect
that produced it.

subprocess and re are imported where used: a module importing this one must still
answer ``--command features`` without paying for them.
"""

import os

from . import redact
from .errors import DatabaseError, MgrctlError

SETTINGS = ("DBHost", "DBUser", "DBPassword", "DBName", "DBSocket", "DBPort")
# [ours] The conf files alone are enough when they name the user and the database: the other keys have
# defaults (localhost, no password). Else mgrctl paramlist is asked, as ISPsystem's own library always does [src].
REQUIRED = ("DBUser", "DBName")
# Where the server is, one setting in three keys: taken from the conf files when they have any of them, lest a
# DBSocket of the conf and a DBHost of mgrctl send the client to a server neither names.
ADDRESS = ("DBHost", "DBPort", "DBSocket")
CONF_FILES = "etc/billmgr.conf and etc/billmgr.conf.d/*.conf"
FROM_CONF = "etc/billmgr.conf"   # where the settings came from, as the refusals below name it
FROM_MGRCTL = "etc/billmgr.conf or, where it has none, in BILLmanager's sbin/mgrctl -m billmgr paramlist"
DEFAULT_TIMEOUT = 60           # seconds for one client call, connecting included
CONNECT_TIMEOUT = 10
CLIENTS = ("mariadb", "mysql")
CLIENT_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/local/mysql/bin")   # BILLmanager's PATH may be short

_UNREACHABLE = {"2002", "2003", "2005", "2006", "2013"}
# Refusals before any statement ran, by the server's error code: what to check. {where} is describe().
_CONNECTION_REFUSALS = {
    "1045": "The database refused the login of {where}: check DBUser and DBPassword in {source}",
    "1698": "The database refused the login of {where} (error 1698): that account logs in by another method than "
            "a password, such as unix_socket, which admits only the system user of the same name; give the "
            "account a password and put it in DBPassword in etc/billmgr.conf",
    "1130": "The database server does not accept {where} from this host (error 1130): grant the user access "
            "from this host, or set DBHost in etc/billmgr.conf to a host the user may connect from (localhost)",
    "1044": "The database server has no database for {where}, or the user may not use it: check DBName in "
            "{source} and the user's grants",
    "2026": "The TLS connection to the database server for {where} failed (error 2026: {text}): check the server's "
            "certificate and TLS settings, or set DBSocket in etc/billmgr.conf to connect through the local socket",
}
_CONNECTION_REFUSALS["1049"] = _CONNECTION_REFUSALS["1044"]
_re = {}


def _patterns():
    """The few regular expressions of this module, compiled once on first use."""
    if not _re:
        import re
        _re["token"] = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`[^`]*`|--[^\n]*|#[^\n]*"""
                                  r"""|/\*.*?\*/|\?""", re.S)
        _re["resultset"] = re.compile(rb'<resultset statement="[^"]*"[^>]*?(?:/>|>(.*?)</resultset>)', re.S)
        _re["row"] = re.compile(rb"<row>(.*?)</row>", re.S)
        _re["field"] = re.compile(rb'<field name="([^"]*)"(?: xsi:nil="true" />|>(.*?)</field>)', re.S)
        _re["entity"] = re.compile(r"&(lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);")
        _re["error"] = re.compile(r"ERROR (\d+) \(\w+\)(?: at line \d+)?: (.*)")
    return _re


def literal(value):
    """A Python value as an SQL literal: strings as ``_utf8mb4 X'..'``, so any byte is inert."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        import math
        if not math.isfinite(value):
            raise ValueError("%r cannot be stored: SQL has no literal for a float NaN or infinity" % value)
        return repr(value)
    if isinstance(value, bytes):
        return "X'%s'" % value.hex() if value else "''"
    text = str(value)
    return "_utf8mb4 X'%s'" % text.encode("utf-8", "replace").hex() if text else "''"


def bind(sql, params=()):
    """``sql`` with each ``?`` outside quotes and comments replaced by the next parameter's literal."""
    params = list(params)
    position = [0]

    def substitute(match):
        token = match.group(0)
        if token != "?":
            return token
        if position[0] >= len(params):
            raise ValueError("more ? placeholders than parameters in: %s" % sql)
        position[0] += 1
        return literal(params[position[0] - 1])

    bound = _patterns()["token"].sub(substitute, sql)
    if position[0] != len(params):
        raise ValueError("%d parameters for %d placeholders in: %s" % (len(params), position[0], sql))
    return bound


def _unescape(text):
    def entity(match):
        name = match.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
        return {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}[name]
    return _patterns()["entity"].sub(entity, text) if "&" in text else text


def parse_xml_results(output):
    """The client's ``--xml`` output as a list of result sets, each a list of dict rows (None for NULL)."""
    patterns = _patterns()
    results = []
    for resultset in patterns["resultset"].finditer(output):
        rows = []
        for row in patterns["row"].finditer(resultset.group(1) or b""):
            record = {}
            for field in patterns["field"].finditer(row.group(1)):
                name = _unescape(field.group(1).decode("utf-8", "replace"))
                value = field.group(2)
                record[name] = None if value is None else _unescape(value.decode("utf-8", "replace"))
            rows.append(record)
        results.append(rows)
    return results


def _option(value):
    """A value for an option file, quoted so that #, ;, quotes and spaces are kept."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"%s"' % escaped


def find_client():
    """The path of the mariadb or mysql client, or DatabaseError saying what to install."""
    import shutil
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(CLIENT_DIRS)
    for name in CLIENTS:
        found = shutil.which(name, path=path)
        if found:
            return found
    raise DatabaseError("Neither the 'mariadb' nor the 'mysql' command-line client is installed; "
                        "install mariadb-client (or mysql-client)")


class Database:
    """A connection to BILLmanager's database, one client process per call."""

    def __init__(self, settings, timeout=DEFAULT_TIMEOUT, source=FROM_CONF):
        """``settings``: billmgr.conf's DB keys (DBHost, DBUser, DBPassword, DBName, DBSocket, DBPort);
        ``source``: where they came from, for messages."""
        self.settings = settings
        self.source = source
        self.timeout = timeout
        self.calls = 0
        self._client = None

    @classmethod
    def from_config(cls, config, caller=None):
        """The database BILLmanager uses: the DB keys of etc/billmgr.conf (and billmgr.conf.d) when they name
        the user and the database; else BILLmanager's own ``mgrctl -m billmgr paramlist`` too, asked once on
        behalf of module ``caller``, the conf files winning where both have a value (and for the server's
        address, ADDRESS, where they have any part of it). DatabaseError naming both places when neither
        names the user and the database."""
        settings = {key: config.get(key) for key in SETTINGS if config.get(key)}
        source = FROM_CONF
        missing = [key for key in REQUIRED if key not in settings]
        if missing:
            from . import mgrctl
            failure = None
            try:
                answer = mgrctl.paramlist(config, caller)
            except MgrctlError as e:
                answer, failure = {}, e.message
            taken = [key for key in SETTINGS if answer.get(key) and key not in settings
                     and not (key in ADDRESS and any(k in settings for k in ADDRESS))]
            settings.update((key, answer[key]) for key in taken)
            source = FROM_MGRCTL
            missing = [key for key in REQUIRED if key not in settings]
            if missing:
                names = " and ".join(missing)
                asked = "failed (%s)" % failure if failure else "names no %s either" % names
                raise DatabaseError("No database settings: %s set no %s, and BILLmanager's sbin/mgrctl -m billmgr "
                                    "paramlist %s. Put DBHost, DBUser, DBPassword and DBName into etc/billmgr.conf"
                                    % (CONF_FILES, names, asked))
        if settings.get("DBPassword"):
            redact.remember(settings["DBPassword"])   # the log masks it wherever it might turn up
        return cls(settings, source=source)

    def describe(self):
        """Where the database is, for messages: ``user 'u' at host (database 'd')``."""
        where = self.settings.get("DBSocket") or self.settings.get("DBHost") or "localhost"
        return "user '%s' at %s (database '%s')" % (
            self.settings.get("DBUser", ""), where, self.settings.get("DBName", ""))

    def _defaults(self):
        """The option file's text: the connection settings, credentials included."""
        lines = ["[client]", "default-character-set=utf8mb4", "connect-timeout=%d" % CONNECT_TIMEOUT]
        for key, option in (("DBHost", "host"), ("DBUser", "user"), ("DBPassword", "password"),
                            ("DBSocket", "socket"), ("DBPort", "port")):
            if self.settings.get(key):
                lines.append("%s=%s" % (option, _option(self.settings[key])))
        if self.settings.get("DBName"):
            lines += ["[mysql]", "database=%s" % _option(self.settings["DBName"])]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def run_script(self, script):
        """Run SQL text in one client call; return its raw ``--xml`` output."""
        if self._client is None:
            self._client = find_client()
        import subprocess
        # The option file is a pipe the client reads as /dev/fd/N: credentials never touch the disk
        # (a killed run leaves no file behind) and never appear in the argument list.
        defaults = self._defaults()
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, defaults)   # far below a pipe's capacity: never blocks
        finally:
            os.close(write_end)
        args = [self._client, "--defaults-file=/dev/fd/%d" % read_end, "--xml", "--batch"]
        self.calls += 1
        try:
            done = subprocess.run(args, input=script.encode("utf-8"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=self.timeout, pass_fds=(read_end,))
        except subprocess.TimeoutExpired:
            raise DatabaseError("The database (%s) did not answer within %d seconds"
                                % (self.describe(), self.timeout))
        except OSError as e:
            raise DatabaseError("Cannot run the database client %s: %s" % (self._client, e))
        finally:
            os.close(read_end)
        if done.returncode != 0:
            raise self._error(done.stderr.decode("utf-8", "replace").strip())
        return done.stdout

    def _error(self, stderr):
        match = _patterns()["error"].search(stderr)
        code, text = (match.group(1), match.group(2)) if match else ("", stderr or "no message")
        if code in _CONNECTION_REFUSALS:
            message = _CONNECTION_REFUSALS[code].format(where=self.describe(), text=text, source=self.source)
            return DatabaseError(message, value=text)
        if code in _UNREACHABLE:
            return DatabaseError("Cannot reach the database server for %s: %s" % (self.describe(), text),
                                 error_type="connect", value=text)
        refusal = DatabaseError("The database rejected a statement (error %s): %s" % (code or "?", text), value=text)
        refusal.statement_refused = bool(code) and not code.startswith("2")   # 2xxx: the client's own errors
        return refusal

    def batch(self, statements, transaction=False):
        """Run ``[(sql, params), ...]`` in one client call; the result sets of those that return rows.

        With ``transaction``, all of them take effect or none does.
        """
        parts = [bind(sql, params) for sql, params in statements]
        if transaction:
            parts = ["START TRANSACTION"] + parts + ["COMMIT"]
        return parse_xml_results(self.run_script(";\n".join(parts) + ";\n"))

    def query(self, sql, params=()):
        """The rows of one SELECT, as dicts of column name -> text (None for NULL)."""
        results = self.batch([(sql, params)])
        return results[0] if results else []

    def execute(self, sql, params=()):
        """Run one statement that returns no rows."""
        self.batch([(sql, params)])
