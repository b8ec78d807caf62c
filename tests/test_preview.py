"""``notify/ntjabber --command preview --task ID`` (issue 13): a queued task as ``process`` would send it, for a
person -- the same text, subject, recipient and gateway as the run that follows delivers -- with nothing sent and
nothing changed: not the task's row, not its file, no journal, no lock."""

import hashlib
import os

import pytest

import sandbox as sandboxlib

from mgrnotify import xmlio

PASS, FAIL, WARN = "\u2714", "\u2718", "!"
XSLT = ('<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        '<xsl:output method="text"/><xsl:template match="/">'
        '<xsl:value-of select="doc/project/name"/>: сервер <xsl:value-of select="doc/item/name"/> '
        'истекает {user.realname}\nвторая строка</xsl:template></xsl:stylesheet>')
EJS = "<%= project.name %>: <% item.forEach(function(i) { %>[<%= i.name %>]<% }) %> {project.name} {user.nope}"


def notice(project, subject="Срок услуги {user.realname}", items=("vds1",), attachments=()):
    files = "".join("<attachment>%s</attachment>" % path for path in attachments)
    return ("<doc><project><id>%s</id><name>Хостинг &amp; Co</name></project><subject>%s</subject>%s%s</doc>"
            % (project, subject, "".join("<item><name>%s</name></item>" % i for i in items),
               "<attachments>%s</attachments>" % files if files else ""))


@pytest.fixture
def box(sandbox):
    sandbox.install("gwrecord")
    sandbox.project = sandbox.add_project("Хостинг & Co")
    sandbox.gateway = sandbox.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-pv1"},
                                          project=sandbox.project, name="Recorder")
    sandbox.user = {"id": "1", "name": "alice", "realname": "Алиса", "jabber": "alice@localhost"}
    return sandbox


class Preview:
    """One preview run: exit status, lines, and the text blocks of its notices."""

    def __init__(self, done):
        self.status = done.returncode
        self.stdout = done.stdout
        self.text = done.stdout.decode("utf-8")
        self.lines = self.text.splitlines()

    def field(self, name):
        """The values of ``  name   value`` lines, one per notice that has it."""
        return [line[len(name) + 2:].strip() for line in self.lines if line.startswith("  %s " % name)]

    def texts(self):
        """Each notice's text, as the indented lines after ``  text ...:`` give it."""
        texts, current = [], None
        for line in self.lines:
            if line.startswith("  text "):
                current = []
                texts.append(current)
            elif current is not None and line.startswith("    "):
                current.append(line[4:])
            else:
                current = None
        return ["\n".join(lines) for lines in texts]

    def verdicts(self):
        return [line for line in self.lines if line[:2] in (PASS + " ", FAIL + " ", WARN + " ")]


def preview(box, task):
    return Preview(box.run("notify/ntjabber", "--command", "preview", "--task", str(task)))


def state(box):
    """Everything preview must leave as it is: the queue's rows, every file under var/ but the logs (content and
    modification time), and which files exist."""
    rows = box.db.query("SELECT * FROM notifytask ORDER BY id")
    files = {}
    for folder, _, names in os.walk(box.var):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".log") or name == "child-argv.log":
                continue
            with open(path, "rb") as f:
                files[path] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return rows, files


def process(box):
    done = box.run("notify/ntjabber", "--command", "process")
    assert done.returncode == 0, done.stdout
    return box.json_lines("var", "gwrecord.delivered")


@pytest.mark.parametrize("template, items", [(XSLT, ("vds1",)), (EJS, ("a", "b&lt;c")), ("plain {user.name}", ())],
                         ids=["XSLT", "EJS", "plain"])
def test_preview_shows_what_process_then_sends_and_changes_nothing(box, template, items):
    task = box.enqueue("ntjabber", template, notice(box.project, items=items), box.user)
    before = state(box)
    shown = preview(box, task)
    print("\n" + shown.text)   # a sample for the README: pytest -s tests/test_preview.py -k XSLT
    assert shown.status == 0, shown.text
    assert state(box) == before
    assert not os.path.exists(box.path("var", "ntjabber.lock"))
    [sent] = process(box)
    assert shown.texts() == [sent["body"]]
    assert shown.field("subject") == [sent["subject"]] == ["Срок услуги Алиса"]
    assert shown.field("recipient") == ["%s (user.jabber of user 'alice')" % sent["to"]]
    assert shown.field("gateway") == [
        "%d (gwrecord) 'Recorder', provider %d's own" % (box.gateway, box.project)]
    assert shown.verdicts() == [
        PASS + " notice 1 of 1: process would send it to alice@localhost through gateway %d (gwrecord) "
        "(outgoing_batch)" % box.gateway]
    assert shown.lines[-1] == "Task %d would go out as shown; nothing was sent" % task
    assert b"pw-pv1" not in shown.stdout and b"bot@localhost" not in shown.stdout


def test_a_notice_that_would_fail_shows_the_reason_process_then_records(box):
    task = box.enqueue("ntjabber", "<% if (x) { %>", notice(box.project), box.user)
    shown = preview(box, task)
    assert shown.status == 1
    [verdict] = shown.verdicts()
    assert verdict.startswith(FAIL + " notice 1 of 1: The EJS template does not compile")
    process(box)
    [row] = box.db.query("SELECT err_info FROM notifytask")
    assert verdict == FAIL + " notice 1 of 1: " + row["err_info"]
    assert shown.lines[-1] == "Task %d would not go out as shown: 1 problem (\u2718 above)" % task


def test_every_notice_of_a_file_in_its_own_block(box):
    """Delivered already, no address, an empty text, no gateway for the provider, attachments left out, sent."""
    other = box.add_project("Second")
    user = box.user
    task = box.enqueue("ntjabber", "first", notice(box.project), user)
    path = box.path(box.db.query("SELECT filename FROM notifytask")[0]["filename"])
    blocks = [("first", notice(box.project), user), ("no address", notice(box.project), dict(user, jabber="")),
              ("  ", notice(box.project), user), ("elsewhere", notice(other), user),
              ("invoice", notice(box.project, attachments=["var/docs/invoice.pdf"]), user)]
    from xml.etree.ElementTree import Element
    root = Element("doc")
    for template, notice_xml, who in blocks:
        root.append(xmlio.parse(sandboxlib.notification_file(template, notice_xml, who)).find("notify"))
    root[0].set("mgrnotify_delivered", "1")
    with open(path, "w", encoding="utf-8") as f:
        f.write(xmlio.serialize(root))
    before = state(box)
    shown = preview(box, task)
    assert shown.status == 1, shown.text
    assert state(box) == before
    assert shown.verdicts() == [
        PASS + " notice 1 of 5: delivered by an earlier run; process does not send it again",
        PASS + " notice 2 of 5: user alice has no jabber; nothing to send; process counts it as done",
        PASS + " notice 3 of 5: the rendered text is empty; nothing to send; process counts it as done",
        FAIL + " notice 4 of 5: No active outgoing gateway of ntjabber for provider %d" % other,
        PASS + " notice 5 of 5: process would send it to alice@localhost through gateway %d (gwrecord) "
        "(outgoing_batch)" % box.gateway]
    assert shown.field("attachments") == ["var/docs/invoice.pdf (left out: the gateway cannot carry them)"]
    assert shown.texts() == ["elsewhere", "invoice"]


def another_types_task(box):
    return box.enqueue("ntemail", "x", notice(box.project), {"email": "alice@example.com"})


def task_without_its_file(box):
    task = box.enqueue("ntjabber", "x", notice(box.project), box.user)
    os.unlink(box.path(box.db.query("SELECT filename FROM notifytask")[0]["filename"]))
    return task


@pytest.mark.parametrize("setup, words", [
    (another_types_task, "task 1: it is a task of ntemail, not of ntjabber \u2014 preview it with notify/ntemail "
                         "--command preview --task 1"),
    (lambda box: 12345, "task 12345: there is no such task in notifytask"),
    (task_without_its_file, "task 1: The notification file "),
], ids=["another type's", "absent", "file missing"])
def test_a_task_that_cannot_be_previewed_says_why(box, setup, words):
    shown = preview(box, setup(box))
    assert shown.status == 1, shown.text
    assert any(line.startswith(FAIL + " " + words) for line in shown.verdicts()), shown.text


@pytest.mark.parametrize("task", ["", "x1", "1; DROP TABLE notifytask", "١٢"])
def test_a_bad_task_argument_is_a_usage_error(box, task):
    done = box.run("notify/ntjabber", "--command", "preview", "--task", task)
    assert done.returncode == 2
    message = xmlio.text(xmlio.parse(done.stdout).find("error"), "msg")
    assert message == "preview needs --task with a task id (digits), not '%s'" % task


def test_a_task_process_would_not_take_says_so(box):
    task = box.enqueue("ntjabber", "late", notice(box.project), box.user)
    box.db.execute("UPDATE notifytask SET error_count = 10, err_info = 'The server said no' WHERE id = ?", (task,))
    open(box.path("etc", "billmgr.DoNothing"), "w").close()
    shown = preview(box, task)
    assert shown.status == 0, shown.text
    assert shown.field("last failure") == ["The server said no"]
    assert [line for line in shown.verdicts() if line.startswith(WARN)] == [
        WARN + " task %d: it failed 10 times: process no longer takes it \u2014 fix the cause, then reset its "
        "error_count to 0 to send it again" % task,
        WARN + " task %d: etc/billmgr.DoNothing exists and the task is not forced: process leaves it waiting \u2014 "
        "nothing to do while BILLmanager migrates data" % task]
