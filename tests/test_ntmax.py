"""notify/ntmax end to end: queued notifications through gate/gwmax to the MAX Bot API stand-in, linking a MAX account
by its shared contact, and replies into tickets -- every module run as BILLmanager runs it, in the sandbox, with
MariaDB and the stand-in mgrctl (which applies user.edit's ``max`` to the database, as BILLmanager would)."""

import os

import pytest

import sandbox as sandboxlib
from max_server import MaxServer

TOKEN = "ntmax-bot-token_5Hq2-Zx81"
ALICE = 4100001          # alice's MAX user_id
MALLORY = 4100666
PHONE = "+7 (912) 000-00-00"


@pytest.fixture
def maxbox(sandbox):
    """A provider with an outgoing and an ingoing gwmax gateway on the stand-in; alice (phone PHONE, not linked
    yet) with a ticket, bob with another."""
    sandboxlib.remember_secret(TOKEN)
    with MaxServer(TOKEN) as server:
        box = sandbox
        box.server = server
        box.project = box.add_project("Хостинг Плюс")
        settings = {"token": TOKEN, "url": server.origin, "timeout": "5", "receive_window": "1",
                    "ticket_format": "#id"}
        box.outgoing = box.add_gateway("gwmax", "ntmax", settings, project=box.project)
        box.ingoing = box.add_gateway("gwmax", "ntmax", settings, project=box.project, gateway_type=2)
        box.alice, box.alice_account = box.add_user("alice", project=box.project, phone=PHONE)
        box.bob, box.bob_account = box.add_user("bob", project=box.project, phone="+7 912 555-44-33")
        box.ticket = box.add_ticket(box.alice_account)
        box.foreign = box.add_ticket(box.bob_account)
        with open(box.path("var", "mgrctl-user-edit"), "w") as f:
            f.write("max\n")
        yield box


def getmessage(box):
    done = box.run("notify/ntmax", "--command", "getmessage", "--gate", "all")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def linked(box, user):
    return box.db.query("SELECT `max` FROM user WHERE id = ?", (user,))[0]["max"]


def replies(box, user_id):
    return [text for to, text, _ in box.server.sent if to == user_id]


def edits(box):
    return [c for c in box.mgrctl_calls() if c["func"] == "user.edit"]


@pytest.mark.smoke
def test_own_contact_links_by_phone_then_replies_go_into_tickets(maxbox):
    maxbox.server.add_bot_started(ALICE)
    getmessage(maxbox)
    [hello] = replies(maxbox, ALICE)
    assert "поделитесь с ботом своим контактом" in hello and "share your own contact" in hello
    assert maxbox.server.keyboards == [(ALICE, hello, [[("request_contact", "Поделиться контактом / Share contact")]])]
    assert linked(maxbox, maxbox.alice) == ""

    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert [c["params"] for c in edits(maxbox)] == [{"elid": str(maxbox.alice), "max": str(ALICE), "sok": "ok"}]
    assert linked(maxbox, maxbox.alice) == str(ALICE)
    assert "связан с учётной записью alice" in replies(maxbox, ALICE)[-1]
    assert len(maxbox.server.keyboards) == 1, "no button under the answer that says linked"

    maxbox.server.add_message(ALICE, "#%d Спасибо, всё работает" % maxbox.ticket)
    getmessage(maxbox)
    tickets = [c for c in maxbox.mgrctl_calls() if c["func"] == "clientticket.edit"]
    assert [c["params"] for c in tickets] == [{"elid": str(maxbox.ticket), "su": "alice", "sok": "ok",
                                               "message": "Спасибо, всё работает"}]
    assert len(replies(maxbox, ALICE)) == 2, "a reply filed into its ticket gets no answer"


@pytest.mark.parametrize("case, contact, reply", [
    ("someone else's contact", MaxServer.contact(ALICE, "+79120000000"), "Этот контакт не ваш"),
    ("no MAX user in it", MaxServer.contact(None, "+79120000000"), "Этот контакт не ваш"),
    ("no phone", MaxServer.contact(MALLORY, None), "нет номера телефона"),
    ("phone of nobody", MaxServer.contact(MALLORY, "+7 999 000-00-00"), "Ни у одной учётной записи нет телефона "
                                                                         "+79990000000"),
])
def test_a_contact_that_proves_nothing_links_nothing(maxbox, case, contact, reply):
    maxbox.server.add_message(MALLORY, "", attachments=[contact])
    getmessage(maxbox)
    assert edits(maxbox) == [] and linked(maxbox, maxbox.alice) == ""
    [answer] = replies(maxbox, MALLORY)
    assert reply in answer, case


def vcard_contact(user_id, *tels):
    """A contact attachment whose vCard holds the TEL lines ``tels`` as written (name;params:value)."""
    contact = MaxServer.contact(user_id, None)
    contact["payload"]["vcf_info"] = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:X\r\n%sEND:VCARD\r\n" % "".join(
        t + "\r\n" for t in tels)
    return contact


def test_a_contact_with_someone_elses_number_beside_ones_own_links_nothing(maxbox):
    # Mallory's own contact, with alice's number first and his own second: which one MAX verified is not said.
    maxbox.server.add_message(MALLORY, "", attachments=[vcard_contact(
        MALLORY, "TEL;TYPE=cell:+79120000000", "TEL;TYPE=cell:+79995550000")])
    getmessage(maxbox)
    assert edits(maxbox) == [] and linked(maxbox, maxbox.alice) == ""
    assert "несколько номеров" in replies(maxbox, MALLORY)[0]
    assert "several phone numbers (+79120000000, +79995550000)" in maxbox.logs()["ntmax.log"]


@pytest.mark.parametrize("tels", [
    ("TEL;VALUE=uri:tel:+7-912-000-00-00",),
    ("TEL:tel:+79120000000;ext=5",),
    ("item1.TEL;type=CELL:+7 912 000 00 00", "TEL;TYPE=home:8 (912) 000-00-00x"),   # the second is no number
    ("TEL:+7 (912) 000-00-00", "TEL;TYPE=work:+79120000000"),                          # one number, twice
])
def test_a_contact_whose_numbers_are_one_links(maxbox, tels):
    maxbox.server.add_message(ALICE, "", attachments=[vcard_contact(ALICE, *tels)])
    getmessage(maxbox)
    assert linked(maxbox, maxbox.alice) == str(ALICE), replies(maxbox, ALICE)


def test_only_clients_of_the_gateways_provider_are_linked(maxbox):
    # Another provider's client with the same phone is neither linked nor makes the phone ambiguous here.
    other_project = maxbox.add_project("Другой провайдер")
    stranger, _ = maxbox.add_user("other-provider-client", project=other_project, phone=PHONE)
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert linked(maxbox, maxbox.alice) == str(ALICE) and linked(maxbox, stranger) == ""


def test_a_phone_several_users_have_links_nobody(maxbox):
    twin, _ = maxbox.add_user("alice-twin", project=maxbox.project, phone="7-912-000-00-00")
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert edits(maxbox) == [] and linked(maxbox, maxbox.alice) == "" and linked(maxbox, twin) == ""
    assert "указан у нескольких учётных записей" in replies(maxbox, ALICE)[0]
    assert "users alice, alice-twin all have" in maxbox.logs()["ntmax.log"]


def test_an_account_linked_to_someone_else_is_never_taken_over(maxbox):
    maxbox.db.execute("UPDATE user SET `max` = ? WHERE id = ?", (str(ALICE), maxbox.alice))
    maxbox.server.add_message(MALLORY, "", attachments=[MaxServer.contact(MALLORY, "+79120000000")])
    getmessage(maxbox)
    assert edits(maxbox) == [] and linked(maxbox, maxbox.alice) == str(ALICE)
    assert "уже связана с другим аккаунтом MAX" in replies(maxbox, MALLORY)[0]


def test_a_max_account_linked_to_one_user_does_not_link_a_second(maxbox):
    maxbox.db.execute("UPDATE user SET `max` = ? WHERE id = ?", (str(ALICE), maxbox.bob))
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert edits(maxbox) == [] and linked(maxbox, maxbox.alice) == ""
    assert "уже связан с другой учётной записью" in replies(maxbox, ALICE)[0]


def test_sharing_again_says_already_linked_and_changes_nothing(maxbox):
    maxbox.db.execute("UPDATE user SET `max` = ? WHERE id = ?", (str(ALICE), maxbox.alice))
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    maxbox.server.add_message(ALICE, "/start")
    getmessage(maxbox)
    assert edits(maxbox) == []
    assert all("уже связан с учётной записью alice" in r for r in replies(maxbox, ALICE)) and \
        len(replies(maxbox, ALICE)) == 2


@pytest.mark.parametrize("answer, logged", [
    ('<doc><error type="access"><msg>Access denied</msg></error></doc>', "BILLmanager refused user.edit"),
    ('<doc><ok/></doc>', "does not hold it"),
])
def test_a_link_billmanager_did_not_store_is_not_announced(maxbox, answer, logged):
    os.remove(maxbox.path("var", "mgrctl-user-edit"))   # BILLmanager stores nothing
    os.makedirs(maxbox.path("var", "mgrctl-answers"), exist_ok=True)
    with open(maxbox.path("var", "mgrctl-answers", "user.edit"), "w") as f:
        f.write(answer)
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert len(edits(maxbox)) == 1 and linked(maxbox, maxbox.alice) == ""
    assert "Не удалось привязать аккаунт" in replies(maxbox, ALICE)[0]
    assert logged in maxbox.logs()["ntmax.log"]


@pytest.mark.parametrize("text, reply", [
    ("#{foreign} not mine", "is not among your tickets"),
    ("#999999 unknown", "Ticket #999999 is not among your tickets"),
    ("no number", "Start your message with the ticket number"),
])
def test_a_linked_users_bad_reply_touches_no_ticket(maxbox, text, reply):
    maxbox.db.execute("UPDATE user SET `max` = ? WHERE id = ?", (str(ALICE), maxbox.alice))
    maxbox.server.add_message(ALICE, text.format(foreign=maxbox.foreign))
    getmessage(maxbox)
    assert maxbox.mgrctl_calls() == []
    assert reply in replies(maxbox, ALICE)[0]


def test_a_stranger_gets_instructions_and_touches_no_ticket(maxbox):
    maxbox.server.add_message(MALLORY, "#%d let me in" % maxbox.ticket)
    getmessage(maxbox)
    assert maxbox.mgrctl_calls() == []
    assert "поделитесь с ботом своим контактом" in replies(maxbox, MALLORY)[0]


@pytest.mark.smoke
def test_notifications_reach_the_linked_user(maxbox):
    maxbox.db.execute("UPDATE user SET `max` = ? WHERE id = ?", (str(ALICE), maxbox.alice))
    user = {"id": str(maxbox.alice), "name": "alice", "realname": "Алиса", "max": str(ALICE)}
    notice = "<doc><project><id>%s</id><name>Хостинг Плюс</name></project></doc>" % maxbox.project
    maxbox.enqueue("ntmax", "<%= project.name %>: счёт оплачен 🙂", notice, user, templatesubject="Оплата")
    maxbox.enqueue("ntmax", "<%= project.name %>: нет адреса", notice, dict(user, max=""))
    done = maxbox.run("notify/ntmax", "--command", "process")
    assert done.returncode == 0, done.stdout + done.stderr
    assert maxbox.db.query("SELECT id FROM notifytask") == []
    assert [(to, text) for to, text, _ in maxbox.server.sent] == [(ALICE, "Оплата\n\nХостинг Плюс: счёт оплачен 🙂")]


@pytest.mark.parametrize("other_phone", ["+1 7912 000 00 00", "8 (912) 000-00-00", "+7 912 000-00-001"])
def test_only_the_same_digits_are_the_same_phone(maxbox, other_phone):
    # Another user's phone holding alice's digits among others, or written with the trunk prefix 8, is not hers.
    other, _ = maxbox.add_user("other", project=maxbox.project, phone=other_phone)
    maxbox.server.add_message(ALICE, "", attachments=[MaxServer.contact(ALICE, "+79120000000")])
    getmessage(maxbox)
    assert linked(maxbox, maxbox.alice) == str(ALICE) and linked(maxbox, other) == ""
