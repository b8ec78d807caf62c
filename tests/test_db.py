"""The db module against a real MariaDB: hostile values survive byte for byte and harm nothing; the settings
come from etc/billmgr.conf, else from BILLmanager's mgrctl paramlist, and their absence is a readable error."""

import json
import os

import pytest

from mgrnotify import config, errors, xmlio
from mgrnotify import db as dblib
from mgrnotify.errors import DatabaseError

HOSTILE = [
    "plain",
    "",
    "it's a \"quote\" and `backtick`",
    "back\\slash \\' \\\" \\\\ \\n \\0 end\\",
    "'; DROP TABLE user; --",
    "\"; DROP TABLE user; #",
    "1 OR 1=1",
    "? ?? %s %(x)s $1 :name",
    "/* comment */ -- dash # hash",
    "tab\there\nnewline\r\ncrlf",
    "кириллица: Привет, мир! Ёё",
    "emoji 🎉👩‍💻 and 4-byte 𝄞",
    "right-to-left \u202eevil\u202c and \u200bzero width",
    "ctrl \x01\x02\x07\x1b\x1f\x7f end",
    "</field></row></resultset><row><field name=\"id\">999</field></row>",
    "&amp; &lt; &#0; &#x41; &quot; &apos;",
    "x" * 100000,
    "_utf8mb4 X'41'",
    "NULL",
    "trailing spaces   ",
]
WITH_NUL = ["nul\x00inside", "\x00", "a\x00'; DROP TABLE user; --"]


@pytest.fixture
def table(sandbox):
    sandbox.db.execute("CREATE TABLE hostile (id INT AUTO_INCREMENT PRIMARY KEY, v LONGTEXT NULL) "
                       "DEFAULT CHARSET=utf8mb4")
    sandbox.add_user("bob", email="bob@example.com")
    return sandbox.db


def _store(db, value):
    return int(db.batch([("INSERT INTO hostile (v) VALUES (?)", (value,)),
                         ("SELECT LAST_INSERT_ID() AS id", ())])[0][0]["id"])


def _intact(db):
    tables = {row[next(iter(row))] for row in db.query("SHOW TABLES")}
    assert {"user", "notifytask", "gateway", "project", "ticket", "hostile"} <= tables
    assert db.query("SELECT name, email FROM user") == [{"name": "bob", "email": "bob@example.com"}]


@pytest.mark.parametrize("value", HOSTILE + [None], ids=lambda v: repr(v)[:30])
def test_value_round_trip(table, value):
    row_id = _store(table, value)
    assert table.query("SELECT v FROM hostile WHERE id = ?", (row_id,)) == [{"v": value}]
    # and it matches itself as a parameter: binding works in comparisons too
    if value is not None:
        assert table.query("SELECT id FROM hostile WHERE v = ?", (value,)) == [{"id": str(row_id)}]
    _intact(table)


@pytest.mark.parametrize("value", WITH_NUL, ids=repr)
def test_nul_is_stored_exactly(table, value):
    row_id = _store(table, value)
    stored = table.query("SELECT HEX(v) AS h FROM hostile WHERE id = ?", (row_id,))[0]["h"]
    assert bytes.fromhex(stored) == value.encode("utf-8")
    # The mysql client's XML writer prints NUL as a space: the one documented loss on reading.
    assert table.query("SELECT v FROM hostile WHERE id = ?", (row_id,)) == [{"v": value.replace("\x00", " ")}]
    _intact(table)


def test_all_hostile_values_in_one_batch_and_one_call(table):
    before = table.calls
    statements = [("INSERT INTO hostile (v) VALUES (?)", (v,)) for v in HOSTILE]
    statements.append(("SELECT v FROM hostile ORDER BY id", ()))
    results = table.batch(statements)
    assert table.calls == before + 1
    assert [row["v"] for row in results[0]] == HOSTILE
    _intact(table)


def test_results_of_several_selects_and_null(table):
    results = table.batch([("SELECT 1 AS a, NULL AS b, 'NULL' AS c", ()), ("SELECT 2 AS a FROM hostile", ()),
                           ("SELECT ? AS x, ? AS y", ("x\ty", None))])
    assert results == [[{"a": "1", "b": None, "c": "NULL"}], [], [{"x": "x\ty", "y": None}]]


def test_transaction_all_or_nothing(table):
    with pytest.raises(DatabaseError) as caught:
        table.batch([("INSERT INTO hostile (v) VALUES (?)", ("first",)),
                     ("INSERT INTO no_such_table VALUES (1)", ())], transaction=True)
    assert "no_such_table" in caught.value.message
    assert table.query("SELECT COUNT(*) AS n FROM hostile") == [{"n": "0"}]


@pytest.mark.parametrize("sql, params", [
    ("SELECT ?", ()),
    ("SELECT ?", (1, 2)),
    ("SELECT '?' AS q", (1,)),
])
def test_placeholder_count_is_checked(sql, params):
    with pytest.raises(ValueError):
        dblib.bind(sql, params)


def test_placeholders_in_quotes_and_comments_stay():
    assert dblib.bind("SELECT '?', \"?\", `?` /* ? */ -- ?\n, ?", (5,)) == "SELECT '?', \"?\", `?` /* ? */ -- ?\n, 5"


@pytest.mark.parametrize("change, words", [
    ({"DBSocket": "/nonexistent/sock"}, "Cannot reach the database server"),
    ({"DBPassword": "wrong password"}, "refused the login of user"),
    ({"DBName": "no_such_db"}, "no database"),
])
def test_connection_failures_are_readable(sandbox, change, words):
    settings = dict(sandbox.db_settings, **change)
    with pytest.raises(DatabaseError) as caught:
        dblib.Database(settings, timeout=30).query("SELECT 1")
    assert words in caught.value.message
    assert sandbox.DB_PASSWORD not in caught.value.message


def test_credentials_never_on_the_command_line_nor_on_disk(sandbox):
    import glob
    import subprocess
    import tempfile
    database = dblib.Database(sandbox.db_settings)
    seen = []
    real_run = subprocess.run

    def spy(args, **kwargs):
        seen.append((list(args), kwargs.get("pass_fds")))
        return real_run(args, **kwargs)

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "*")))
    subprocess.run = spy
    try:
        assert database.query("SELECT CURRENT_USER() AS u")[0]["u"].startswith(sandbox.db_user + "@")
    finally:
        subprocess.run = real_run
    (args, fds), = seen
    assert args[1] == "--defaults-file=/dev/fd/%d" % fds[0]
    assert not any(sandbox.DB_PASSWORD in a or sandbox.db_user in a for a in args)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "*"))) <= before, "nothing is written to disk"
    with pytest.raises(OSError):
        os.fstat(fds[0])   # the pipe is closed after the call


def test_timeout_is_a_readable_error(sandbox):
    with pytest.raises(DatabaseError) as caught:
        dblib.Database(sandbox.db_settings, timeout=1).query("SELECT SLEEP(5)")
    assert "did not answer within 1 seconds" in caught.value.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=repr)
def test_nan_and_infinity_are_refused_not_written_as_sql(value):
    # repr() wrote "nan" and "inf" into the statement, which MariaDB reads as column names.
    with pytest.raises(ValueError, match="SQL has no literal for a float NaN or infinity"):
        dblib.bind("INSERT INTO hostile (v) VALUES (?)", (value,))


def test_finite_floats_are_stored(table):
    row_id = _store(table, 0.1)
    assert table.query("SELECT v FROM hostile WHERE id = ?", (row_id,)) == [{"v": "0.1"}]


# MariaDB's refusals before any statement ran: each says what to check, and none is a refused statement, which
# the queue would set aside (errors.DatabaseError.statement_refused) instead of keeping its journal.
LOGIN_REFUSALS = [
    ("ERROR 1045 (28000): Access denied for user 'billmgr'@'localhost' (using password: YES)",
     "The database refused the login of user 'billmgr'"),
    ("ERROR 1698 (28000): Access denied for user 'billmgr'@'localhost'",
     "logs in by another method than a password, such as unix_socket"),
    ("ERROR 1130 (HY000): Host '10.0.0.5' is not allowed to connect to this MariaDB server",
     "does not accept user 'billmgr' at db.example (database 'billmgr') from this host (error 1130)"),
    ("ERROR 2026 (HY000): TLS/SSL error: self-signed certificate in certificate chain",
     "The TLS connection to the database server for user 'billmgr' at db.example (database 'billmgr') failed "
     "(error 2026: TLS/SSL error: self-signed certificate in certificate chain)"),
]


@pytest.mark.parametrize("stderr, words", LOGIN_REFUSALS, ids=["1045", "1698", "1130", "2026"])
def test_login_and_tls_refusals_say_what_to_check(stderr, words):
    database = dblib.Database({"DBHost": "db.example", "DBUser": "billmgr", "DBName": "billmgr"})
    error = database._error(stderr)
    assert words in error.message
    assert "rejected a statement" not in error.message
    assert error.statement_refused is False


def test_a_statement_refused_is_told_apart(table):
    with pytest.raises(DatabaseError) as caught:
        table.execute("INSERT INTO no_such_table VALUES (1)")
    assert "rejected a statement (error 1146)" in caught.value.message
    assert caught.value.statement_refused is True


def test_an_account_without_a_password_login_is_explained(sandbox):
    # unix_socket admits only the system user of the same name: the suite runs as another one.
    sandbox.mariadb.admin("CREATE USER IF NOT EXISTS 'mgrn_socket_only'@'localhost' IDENTIFIED VIA unix_socket;")
    try:
        settings = dict(sandbox.db_settings, DBUser="mgrn_socket_only", DBPassword="")
        with pytest.raises(DatabaseError) as caught:
            dblib.Database(settings, timeout=30).query("SELECT 1")
    finally:
        sandbox.mariadb.admin("DROP USER IF EXISTS 'mgrn_socket_only'@'localhost';")
    assert "(error 1698)" in caught.value.message
    assert caught.value.statement_refused is False


# --- the settings: etc/billmgr.conf, else BILLmanager's `mgrctl -m billmgr paramlist` ---------------------------

def _write_conf(sandbox, settings):
    """etc/billmgr.conf holding ``settings`` (a dict of DB keys) and nothing else."""
    with open(sandbox.path("etc", "billmgr.conf"), "w", encoding="utf-8") as f:
        f.writelines("%s %s\n" % item for item in settings.items())


def _paramlist(settings, shape):
    """A paramlist answer giving ``settings`` in one of the shapes mgrctl.parse_paramlist reads."""
    if shape == "bjson":   # as ISPsystem's library reads it [src]
        return json.dumps({"elem": [{key: value} for key, value in settings.items()]})
    if shape == "json":
        return json.dumps({"doc": {"elem": [{key: {"$": value}} for key, value in settings.items()]}})
    if shape == "flat":
        return json.dumps(settings)
    return "".join("%s=%s\n" % item for item in settings.items())


def _process(sandbox):
    """ntjabber's process run on the sandbox's (empty) queue: (exit status, error message or None)."""
    done = sandbox.run("notify/ntjabber", "--command", "process")
    error = xmlio.parse(done.stdout).find("error")
    return done.returncode, None if error is None else xmlio.text(error, "msg")


@pytest.mark.parametrize("in_conf, shape", [
    (("DBSocket",), "bjson"),
    ((), "bjson"),
    ((), "json"),
    (("DBSocket", "DBHost"), "flat"),
    (("DBPassword", "DBSocket"), "lines"),
])
def test_settings_the_conf_files_lack_come_from_mgrctl_paramlist(sandbox, in_conf, shape):
    conf = {key: sandbox.db_settings[key] for key in in_conf}
    _write_conf(sandbox, conf)
    sandbox.set_mgrctl_answer("paramlist", _paramlist(sandbox.db_settings, shape))
    sandbox.add_user("bob", email="bob@example.com")
    assert _process(sandbox) == (0, None)
    assert sandbox.mgrctl_calls() == [{"options": {"-m": "billmgr"}, "func": "paramlist", "params": {"out": "bjson"}}]
    assert sandbox.mgrctl_contexts() == [{"func": "paramlist", "SSH_CONNECTION": "ntjabber", "cwd": sandbox.root}]
    database = dblib.Database.from_config(config.Config(sandbox.root), caller="test")
    address = ("DBHost", "DBSocket")   # one setting: all of it from the conf files when they have any of it
    from_conf = any(key in in_conf for key in address)
    expected = {k: v for k, v in sandbox.db_settings.items() if k in in_conf or not (k in address and from_conf)}
    assert database.settings == expected
    assert database.query("SELECT name FROM user") == [{"name": "bob"}]


def test_the_conf_files_win_over_mgrctl_where_both_have_a_value(sandbox):
    _write_conf(sandbox, {key: sandbox.db_settings[key] for key in ("DBSocket", "DBName", "DBPassword")})
    sandbox.set_mgrctl_answer("paramlist", _paramlist(
        {"DBHost": "db.example", "DBUser": sandbox.db_user, "DBName": "no_such_db", "DBPassword": "wrong password"},
        "bjson"))
    database = dblib.Database.from_config(config.Config(sandbox.root), caller="test")
    # DBHost too stays the conf files': they say where the server is (DBSocket)
    assert database.settings == {k: v for k, v in sandbox.db_settings.items() if k != "DBHost"}
    assert database.query("SELECT DATABASE() AS d") == [{"d": sandbox.db_name}]


def test_mgrctl_is_not_asked_when_the_conf_files_name_user_and_database(sandbox):
    assert _process(sandbox) == (0, None)
    assert sandbox.mgrctl_calls() == []


def test_a_refused_login_names_both_places_the_settings_came_from(sandbox):
    _write_conf(sandbox, {"DBSocket": sandbox.mariadb.socket})
    sandbox.set_mgrctl_answer("paramlist", _paramlist(dict(sandbox.db_settings, DBPassword="wrong password"), "bjson"))
    status, message = _process(sandbox)
    assert status == errors.EXIT_FAILURE
    assert ("refused the login of user '%s'" % sandbox.db_user) in message
    assert "check DBUser and DBPassword in etc/billmgr.conf or, where it has none, in BILLmanager's sbin/mgrctl " \
           "-m billmgr paramlist" in message


@pytest.mark.parametrize("answer, status, words", [
    (None, 0, "failed (There is no {root}/sbin/mgrctl: is BILLmanager installed in {root}?)"),
    ("", 1, "failed (mgrctl paramlist ended with exit status 1)"),
    ('{"error": {"type": "access", "msg": "Access denied"}}', 0,
     "failed (BILLmanager refused paramlist: Access denied)"),
    ('{"elem": [{"DBPassword": PASSWORD}, {"DBHost": "localhost"}]}', 0, "names no DBUser and DBName either"),
    ('{"elem": [{"DBPassword": PASSWORD}', 0, "failed (The answer of mgrctl paramlist is not valid JSON)"),
], ids=["no mgrctl", "exit status", "error answer", "no user", "not JSON"])
def test_settings_nowhere_is_a_readable_error_naming_both_places(sandbox, answer, status, words):
    """``answer``: what mgrctl paramlist prints (None: there is no sbin/mgrctl), PASSWORD standing for the real one."""
    if answer is None:
        os.unlink(sandbox.path("sbin", "mgrctl"))
    else:
        sandbox.set_mgrctl_answer("paramlist", answer.replace("PASSWORD", json.dumps(sandbox.DB_PASSWORD)), status)
    _write_conf(sandbox, {"DBHost": "localhost", "DBPassword": sandbox.DB_PASSWORD})
    exit_status, message = _process(sandbox)
    assert exit_status == errors.EXIT_FAILURE
    assert message == ("No database settings: etc/billmgr.conf and etc/billmgr.conf.d/*.conf set no DBUser and "
                       "DBName, and BILLmanager's sbin/mgrctl -m billmgr paramlist %s. Put DBHost, DBUser, DBPassword "
                       "and DBName into etc/billmgr.conf" % words.format(root=sandbox.root))
    assert message in sandbox.logs()["ntjabber.log"]
    # and the password reached neither the output nor the log (the sandbox fixture's leak scan checks it too)
    assert sandbox.DB_PASSWORD not in sandbox.logs()["ntjabber.log"] and sandbox.DB_PASSWORD not in message
