"""Which gateway a notice goes through, and what the gateway is given (issue 13), with notify/ntjabber run as
BILLmanager runs it and the recording gateway (tests/stand-ins/gwrecord)."""

import json
import os

import pytest

from mgrnotify import gatewaycall

BATCH = pytest.mark.parametrize("batch", [True, False], ids=["outgoing_batch", "one call per message"])


def notice(project, attachments=()):
    files = "".join("<attachment>%s</attachment>" % path for path in attachments)
    return ("<doc><project><id>%s</id><name>P%s</name></project><subject>S</subject>%s</doc>"
            % (project, project, "<attachments>%s</attachments>" % files if files else ""))


USER = {"id": "1", "name": "alice", "jabber": "alice@localhost"}


@pytest.fixture
def box(sandbox):
    sandbox.install("gwrecord")
    return sandbox


def process(box, batch=True):
    if not batch:
        open(box.path("var", "gwrecord.nobatch"), "w").close()
    done = box.run("notify/ntjabber", "--command", "process")
    assert done.returncode == 0, done.stdout
    return box.json_lines("var", "gwrecord.delivered")


def waiting(box):
    return box.db.query("SELECT id, err_info FROM notifytask")


@BATCH
@pytest.mark.parametrize("blank", [None, 0], ids=["NULL", "0"])
def test_a_gateway_with_no_provider_serves_every_provider(box, blank, batch):
    first, second = box.add_project("First"), box.add_project("Second")
    shared = box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost"}, project=blank, name="shared")
    box.enqueue("ntjabber", "to first", notice(first), USER)
    box.enqueue("ntjabber", "to second", notice(second), USER)
    delivered = process(box, batch)
    assert sorted((d["body"], d["gateway"]["id"]) for d in delivered) == [
        ("to first", str(shared)), ("to second", str(shared))]
    assert waiting(box) == []


@BATCH
def test_a_providers_own_gateway_comes_before_the_one_for_all(box, batch):
    first, second = box.add_project("First"), box.add_project("Second")
    shared = box.add_gateway("gwrecord", "ntjabber", {"jabber": "shared@localhost"}, name="shared")
    own = box.add_gateway("gwrecord", "ntjabber", {"jabber": "own@localhost"}, project=first, name="own")
    box.add_gateway("gwrecord", "ntjabber", {"jabber": "off@localhost"}, project=second, active="off")
    box.add_gateway("gwrecord", "ntjabber", {"jabber": "in@localhost"}, project=second, gateway_type=2)
    box.enqueue("ntjabber", "to first", notice(first), USER)
    box.enqueue("ntjabber", "to second", notice(second), USER)
    delivered = process(box, batch)
    assert sorted((d["body"], d["gateway"]["id"]) for d in delivered) == [
        ("to first", str(own)), ("to second", str(shared))]


def test_among_several_candidates_the_lowest_id_is_used_and_the_log_says_so(box):
    project = box.add_project()
    ids = [box.add_gateway("gwrecord", "ntjabber", {"jabber": "b%d@localhost" % i}, project=None, name="g%d" % i)
           for i in range(3)]
    box.enqueue("ntjabber", "one", notice(project), USER)
    box.enqueue("ntjabber", "two", notice(project), USER)
    delivered = process(box)
    assert [d["gateway"]["id"] for d in delivered] == [str(ids[0])] * 2
    log = box.logs()["ntjabber.log"]
    lines = [line for line in log.splitlines() if "could serve" in line]
    assert len(lines) == 1, log   # chosen once per provider and run, said once
    assert "%s, %s, %s" % tuple(ids) in lines[0] and "gateway %d (gwrecord)" % ids[0] in lines[0]


def test_no_gateway_for_the_provider_leaves_the_task_with_the_reason(box):
    first, second = box.add_project("First"), box.add_project("Second")
    box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost"}, project=first)
    task = box.enqueue("ntjabber", "to second", notice(second), USER)
    assert process(box) == []
    assert waiting(box) == [{"id": str(task), "err_info": "No active outgoing gateway of ntjabber for provider %d"
                             % second}]


@BATCH
def test_the_gateway_gets_every_column_of_its_row(box, batch):
    project = box.add_project()
    box.db.execute("ALTER TABLE gateway ADD COLUMN maxsize INT NOT NULL DEFAULT 70, ADD COLUMN note VARCHAR(32) NULL")
    gateway = box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost", "password": "pw-col"},
                              project=project, name="Jabber")
    box.enqueue("ntjabber", "hello", notice(project), USER)
    [record] = process(box, batch)
    assert record["gateway"] == {"id": str(gateway), "name": "Jabber", "gateway_module": "gwrecord",
                                 "notify_module": "ntjabber", "gateway_type": "1", "active": "on",
                                 "project": str(project), "maxsize": "70", "note": ""}


@BATCH
def test_attachments_go_to_a_gateway_that_carries_them(box, batch):
    open(box.path("var", "gwrecord.files"), "w").close()
    project = box.add_project()
    box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost"}, project=project)
    box.enqueue("ntjabber", "invoice", notice(project, ["var/docs/invoice 1.pdf", "/abs/act.pdf"]), USER)
    box.enqueue("ntjabber", "plain", notice(project), USER)
    delivered = process(box, batch)
    assert [(d["body"], d["attachments"]) for d in delivered] == [
        ("invoice", ["var/docs/invoice 1.pdf", "/abs/act.pdf"]), ("plain", None)]
    assert "cannot carry attachments" not in box.logs()["ntjabber.log"]


def test_a_gateway_without_attachments_sends_the_text_and_the_log_names_the_files(box):
    project = box.add_project()
    gateway = box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost"}, project=project)
    task = box.enqueue("ntjabber", "invoice", notice(project, ["var/docs/invoice.pdf"]), USER)
    delivered = process(box)
    assert [(d["body"], d["attachments"]) for d in delivered] == [("invoice", None)]
    assert ("Task %d: gateway %d (gwrecord) cannot carry attachments; sent without var/docs/invoice.pdf"
            % (task, gateway)) in box.logs()["ntjabber.log"]


def test_getmessage_fetches_nothing_while_billmanager_migrates_data(box):
    box.add_gateway("gwrecord", "ntjabber", {"jabber": "bot@localhost"}, gateway_type=2)
    inbox = box.path("var", "gwrecord.inbox")
    with open(inbox, "w", encoding="utf-8") as f:
        f.write(json.dumps({"from": "alice@localhost", "text": "#1 hello"}) + "\n")
    open(box.path("etc", "billmgr.DoNothing"), "w").close()
    done = box.run("notify/ntjabber", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 0, done.stdout
    assert os.path.exists(inbox)   # the gateway was never asked
    assert "billmgr.DoNothing exists" in box.logs()["ntjabber.log"]
    os.unlink(box.path("etc", "billmgr.DoNothing"))
    assert box.run("notify/ntjabber", "--command", "getmessage", "--gate", "all").returncode == 0
    assert not os.path.exists(inbox)


class Row(gatewaycall.GatewayRow):
    def __init__(self, id, project, type="1", active="on"):
        super().__init__({"id": id, "gateway_module": "gw", "project": project, "gateway_type": type,
                          "active": active})


@pytest.mark.parametrize("rows, project, chosen", [
    ([Row("9", "2"), Row("3", None)], "2", "9"),          # the provider's own first, whatever the ids
    ([Row("9", "2"), Row("3", None)], "5", "3"),          # else one for all providers
    ([Row("10", ""), Row("9", "0")], "5", "9"),           # blank and 0 alike; numeric id order, not text
    ([Row("4", "2"), Row("3", "2", active="OFF")], "2", "4"),
    ([Row("4", "2", type="2")], "2", None),               # an ingoing gateway never sends
    ([Row("7", "2"), Row("8", None)], "", "8"),           # no provider named: one for all providers first
    ([Row("7", "2"), Row("6", "3")], "", "6"),            # else any
    ([], "1", None),
])
def test_gateway_choice_table(rows, project, chosen):
    gateway = gatewaycall.outgoing_for(rows, project)
    assert (gateway.id if gateway else None) == chosen
