"""Write RELIABILITY.md from a test run: the fault and bad-input matrix, each row with the tests that prove it
and their counts in that run; the generated cases; the stateful queue model; the interpreters.

    python3 tests/reliability.py build      (make test does this)

It reads build/junit.xml (every test, the modules run by /usr/bin/python3), build/fuzz-counts.json (what the
generators and the queue model did) and build/junit-{modules,library}-X.Y.xml (the runs under other interpreters).
The last mutation run (``make mutate``) is not part of a test run: its section is copied from the file
tests/mutation/run.py keeps it in (``MUTATION_RUN``), so a test run does not drop it.
"""

import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (fault or input class, what the modules do, tests that prove it: "file.py::test_name" prefixes)
MATRIX = [
    ("Faults during process", [
        ("The gateway exits non-zero, or prints garbage",
         "Only the message it was on fails (err_info says how); the rest go through a new gateway process",
         ["test_queue.py::test_gateway_misbehaving", "test_queue.py::test_a_gateway_dying_on_one_message"]),
        ("The gateway hangs",
         "Stopped after its deadline (from its own timeout setting); the task keeps 'did not finish … within N "
         "seconds and was stopped'; the others go",
         ["test_queue.py::test_a_hanging_gateway"]),
        ("The gateway module is missing",
         "Every task for it keeps 'The gateway module gwX is not installed'",
         ["test_queue.py::test_missing_gateway_module"]),
        ("The database is down at start", "An error document saying the server cannot be reached; nothing sent",
         ["test_queue.py::test_the_database_down_at_start", "test_runner.py::test_database_down"]),
        ("The database goes away mid-batch",
         "The run stops with an error document; the journal keeps what was delivered; the next run finishes: each "
         "notification delivered exactly once",
         ["test_queue.py::test_the_database_going_away_mid_run"]),
        ("process is killed (SIGKILL) mid-batch and run again",
         "Nothing lost; at most the one message in flight sent twice (results acknowledged one by one)",
         ["test_queue.py::test_sigkill_at_a_chosen_message"]),
        ("process is killed (SIGKILL) mid-window, Prosody 40 ms away (a delaying proxy)",
         "Nothing lost; at most gwjabber's window (32) sent twice",
         ["test_ntjabber.py::test_sigkill_mid_window"]),
        ("The XMPP server ends the stream mid-window (a message too big for it)",
         "Those confirmed stay delivered; the one at fault fails as 'may have been delivered' (retried next run); "
         "those behind it, which the server never handled, go again after a new login; each arrives once",
         ["test_gwjabber.py::test_a_message_that_makes_the_server_end_the_stream",
          "test_hostile_values.py::test_a_one_megabyte_message"]),
        ("Two process runs start together", "A lock: one works, the others leave; nothing sent twice",
         ["test_queue.py::test_two_runs_at_once"]),
        ("A notification file missing, empty, not XML, with a DTD, not UTF-8",
         "The task keeps a readable err_info; the rest of the batch goes",
         ["test_queue.py::test_a_bad_notification_file", "test_queue.py::test_failures_stay_queued"]),
        ("A template throws (XSLT or EJS), or no gateway serves the provider",
         "The task keeps 'The EJS template failed at line N: …' / 'No active outgoing gateway …'",
         ["test_queue.py::test_failures_stay_queued", "test_ntjabber.py::test_failures_leave_the_task_queued"]),
        ("A template prints to stdout or stderr (console.log, process.stdout.write)",
         "Answers are matched to their request by id on a channel of their own: every notice gets its own text; "
         "what the template printed goes to the log",
         ["test_queue.py::test_a_template_printing_to_stdout", "test_template.py::test_ejs_output"]),
        ("A template loops or recurses without end (XSLT or EJS)",
         "Stopped at its deadline in its own renderer process: the task keeps 'The XSLT template ran past N s and "
         "was stopped; …'; the renderer is replaced and the rest of the queue goes",
         ["test_queue.py::test_a_runaway_template", "test_template.py::test_endless_template"]),
        ("process is killed while a template renders",
         "The renderers (node, the XSLT worker) die with it: nothing keeps spinning",
         ["test_queue.py::test_a_killed_run_leaves_no_renderer_behind", "test_template.py::test_helpers_die_with_a_killed_run",
          "test_template.py::test_helper_killed_between_renders"]),
        ("A partly delivered file, and its journal applied twice (the database update failed, or a kill)",
         "Delivered notices are marked by position, never removed: a replay marks the same ones; the undelivered "
         "notice stays, its failure counted once; the file keeps its mode and owner",
         ["test_queue.py::test_several_notifies", "test_queue.py::test_a_partial_delivery_replayed",
          "test_queue.py::test_a_rewritten_notification_file"]),
        ("err_info the column cannot hold: emoji in utf8 (utf8mb3), Cyrillic in latin1, a short column; strict "
         "mode", "Made to fit (characters the charset lacks as '?', cut to the column's length); the queue moves on",
         ["test_queue.py::test_err_info_fits_the_column"]),
        ("The database refuses one task's update or delete (a trigger)",
         "The batch is applied task by task; the refused one is set aside in var/<module>.journal.rejected with a "
         "log line; a refused delete is never sent again; the others are recorded",
         ["test_queue.py::test_a_refused_update", "test_queue.py::test_a_refused_delete"]),
        ("A batch gateway stops listening mid-batch (its acknowledgement pipe closed)",
         "A failed gateway for the message in flight, never an internal error; the rest go",
         ["test_queue.py::test_a_batch_gateway_gone_mid_batch"]),
        ("A long run (hundreds of failing tasks)",
         "Every batch query has the same size: the next batch starts after the last task taken",
         ["test_queue.py::test_queue_queries_stay_small"]),
        ("Wrong password, server down, TLS failure, a bounced recipient (real Prosody)",
         "The task keeps the server's reason; the others go",
         ["test_ntjabber.py::test_failures_leave_the_task_queued", "test_ntjabber.py::test_a_bounced_recipient"]),
    ]),
    ("Faults in gateways", [
        ("The server closes at once, never answers, answers junk, drops mid-conversation, has a certificate for "
         "another name", "An error document naming the cause, within the configured timeout",
         ["test_gateway_faults.py::"]),
        ("ePochta: every negative status, HTTP 500, a timeout, a non-XML answer, refused connection",
         "An error document with ePochta's meaning", ["test_gwepochta.py::"]),
        ("HTTP SMS (SMS.ru, SMSC.ru, SMS Aero, MTS Exolve, custom): every refusal class in an HTTP 200 or 4xx "
         "answer, HTTP 500, an HTML page, silence past the timeout, wrong credentials, an untrusted certificate",
         "An error document with the provider's own reason; refused credentials are type connect; a timeout after "
         "the request went out says the SMS may have been sent", ["test_gwhttpsms.py::"]),
        ("MAX Bot API: a wrong token (401), 429 with and without Retry-After, a wait beyond the bound, a server that "
         "never answers, an untrusted certificate, a crash before the marker is saved, two ingoing runs at once",
         "An error document naming the cause; a short 429 waited out; updates handed over again rather than lost, "
         "and never by two runs", ["test_gwmax.py::"]),
        ("SMTP/IMAP/POP3: wrong password, refused recipient, untrusted certificate, crash before marking",
         "An error document naming the side that failed; unmarked mail comes again", ["test_gwmail.py::"]),
        ("XMPP: stream and SASL errors, wrong password, TLS failures, silent servers",
         "Exceptions with readable text, error documents", ["test_xmpp.py::", "test_gwjabber.py::"]),
        ("A server that answers a byte at a time (ePochta's stand-in, from the status line or from the body)",
         "One deadline bounds the whole exchange (DNS, connect, TLS, every read): 'did not answer within N s'",
         ["test_gwepochta.py::test_timeout_bounds_the_whole_answer"]),
        ("A hostile XMPP server: 8 MB of nested elements, a stanza of too many elements",
         "Refused past 32 levels or 10,000 elements, before it takes memory, with a readable sentence",
         ["test_xmpp.py::test_reader_refuses_a_stanza_before_it_takes_memory",
          "test_gwjabber.py::test_a_server_sending_nested_elements"]),
        ("SCRAM: a mandatory m= extension, a salt or signature that is not valid base64, a wrong signature",
         "The login fails (RFC 5802)", ["test_xmpp.py::test_scram_refuses", "test_xmpp.py::test_scram_rejects"]),
        ("IMAP: the UID after the message literal in a FETCH answer; two ingoing runs on one mailbox",
         "The mail is taken either way; the runs take turns (a lock per mailbox), so no mail is handed over twice",
         ["test_gwmail.py::test_fetched_messages_in_any_order", "test_gwmail.py::test_imap_uid_after_the_message",
          "test_gwmail.py::test_two_ingoing_runs_take_turns"]),
        ("Passwords that are not ASCII (SMTP, IMAP, POP3)", "Sent as UTF-8 (AUTH PLAIN, AUTHENTICATE PLAIN)",
         ["test_gwmail.py::test_a_password_that_is_not_ascii"]),
        ("MariaDB refuses the login (1045, 1698), the host (1130) or TLS (2026); NaN or infinity as a value",
         "A sentence saying what to check in billmgr.conf; NaN refused before any SQL is written",
         ["test_db.py::test_login_and_tls_refusals", "test_db.py::test_nan_and_infinity",
          "test_db.py::test_a_statement_refused_is_told_apart"]),
    ]),
    ("Bad input", [
        ("Hostile stdin: billion laughs, external entity, DTD, truncated, not UTF-8, empty, not XML",
         "An error document and exit status 3 for every command of every gateway",
         ["test_runner.py::test_hostile_stdin"]),
        ("Random and mutated stdin and arguments (hypothesis)",
         "A well-formed document and a documented exit status; never a traceback, never a hang",
         ["test_fuzz.py::"]),
        ("Bad command lines", "An error document and exit status 2", ["test_runner.py::test_bad_command_lines",
                                                                       "test_runner.py::test_getmessage_gate"]),
    ]),
    ("Hostile values", [
        ("SQL-looking text, quotes, backslashes, NUL, emoji, Cyrillic written to and read from the database",
         "Byte-identical, no table harmed", ["test_db.py::"]),
        ("SQL, markup closing a stanza, control characters, RTL and emoji text in every field; a 1 MB message",
         "Delivered as text, no row changed, no stanza injected; the 1 MB message fails alone, readably",
         ["test_hostile_values.py::"]),
        ("Ticket ids like '1 OR 1=1', strangers, foreign tickets", "A short reply; no ticket touched",
         ["test_queue.py::test_bad_replies", "test_hostile_values.py::test_hostile_replies",
          "test_ntjabber.py::test_replies"]),
        ("A MAX contact that proves nothing: forwarded, without a MAX user or a phone, nobody's or several users' "
         "phone, digits only contained in another phone, an account linked to another MAX user",
         "Nothing linked, a reply saying why; BILLmanager's answer read back before 'linked' is said",
         ["test_ntmax.py::test_a_contact_that_proves_nothing", "test_ntmax.py::test_a_phone_several",
          "test_ntmax.py::test_an_account_linked", "test_ntmax.py::test_a_max_account_linked",
          "test_ntmax.py::test_only_the_same_digits", "test_ntmax.py::test_a_link_billmanager_did_not_store"]),
        ("CR/LF in mail subjects and names", "No header added", ["test_gwmail.py::test_line_breaks"]),
        ("RFC 2047 encoded line breaks in every header source (subject, from_name, provider, recipient, a complete "
         "mail's own fields), on 3.6, 3.9, 3.12, 3.13 and /usr/bin/python3; a display name with quotes and a comma",
         "The SMTP server receives exactly the fields gwmail writes; the address shown is the address used; a "
         "header block holding a line gwmail did not write is refused before sending",
         ["test_gwmail.py::test_encoded_line_breaks_add_no_header", "test_gwmail.py::test_the_guard_alone",
          "test_gwmail.py::test_header_text_is_one_line", "test_gwmail.py::test_a_value_that_would_add_a_line",
          "test_gwmail.py::test_the_written_header_block_is_checked"]),
        ("SMS text with a form feed; a number written with the 00 international prefix",
         "The form feed counts as a GSM-7 extension (two septets); 00 is dropped",
         ["test_gwepochta.py::test_sms_measure", "test_gwepochta.py::test_normalize_phone"]),
        ("A 1 MB pathological log line (thousands of unclosed tags and quotes)", "Redacted in linear time",
         ["test_library.py::test_redact_takes_linear_time"]),
        ("A package repository changed after `make repo` signed it: a tampered apt index; an apt Release, a "
         "repomd.xml or a package signed by another key",
         "apt-get update or dnf refuses it, naming the hash or the key; nothing is installed",
         ["test_repo.py::test_apt_refuses_a_damaged_repository", "test_repo.py::test_dnf_refuses_what_another_key"]),
    ]),
    ("Secrets", [
        ("Every password the suite used, in everything the modules wrote: logs, stdout and stderr of every run, "
         "the argument lists of child processes, mgrctl calls",
         "None appears (scanned after every test that used a sandbox)", ["<every sandbox test>"]),
        ("Debug level 9 with passwords in the input", "Masked by the logger itself",
         ["test_runner.py::test_password_at_debug_level", "test_gwepochta.py::test_secrets_never_leak",
          "test_gwmail.py::test_passwords_never_leak"]),
        ("check_connection given secrets at the form's root, in xmlparams, nested, in attributes, and a refused "
         "login; every gateway, at debug level 9",
         "The answer has every secret-named field blanked wherever it sat; nothing in stdout, stderr or the log",
         ["test_runner.py::test_check_connection_echoes_no_secret"]),
        ("Database credentials", "Through a pipe read as /dev/fd/N: never on the command line, never on disk",
         ["test_db.py::test_credentials_never"]),
        ("The key that signs the package repositories (`make repo`)",
         "Only its public part is written, beside the repositories; nothing outside build/ changes",
         ["test_repo.py::test_the_exported_key_is_the_builders_public_key_only",
          "test_repo.py::test_make_repo_writes_nothing_outside_build"]),
    ]),
]


def results(junit):
    """{'file.py::test_name[param]': 'passed' | 'failed' | 'skipped'} from a junit XML report."""
    outcome = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = "%s.py::%s" % (case.get("classname", "").split(".")[-1], case.get("name"))
        if case.find("failure") is not None or case.find("error") is not None:
            outcome[name] = "failed"
        elif case.find("skipped") is not None:
            outcome[name] = "skipped"
        else:
            outcome[name] = "passed"
    return outcome


def count(outcome, prefixes):
    """'N passed' (plus failed/skipped) for the tests whose names start with one of ``prefixes``."""
    if prefixes == ["<every sandbox test>"]:
        chosen = list(outcome.values())
    else:
        chosen = [v for k, v in outcome.items() if any(k.startswith(p) for p in prefixes)]
    if not chosen:
        return "**no test ran**"
    parts = ["%d %s" % (chosen.count(kind), kind) for kind in ("passed", "failed", "skipped") if chosen.count(kind)]
    return ", ".join(parts)


INTERPRETER_RUNS = {
    "modules": "the tests that run modules, the modules run by this interpreter",
    "library": "the library's own tests, pytest itself on this interpreter",
}
# Where each interpreter is found on the systems BILLmanager runs on.
DISTRIBUTIONS = {"3.6": "AlmaLinux 8", "3.9": "AlmaLinux 9, Debian 11", "3.11": "Debian 12",
                 "3.12": "Ubuntu 24.04", "3.13": "Debian 13"}
MODEL_PART = "queue model"
MUTATION_RUN = os.path.join(REPO, "tests", "mutation", "last-run.md")


def totals(outcome):
    """'N passed, M skipped' for a whole report."""
    values = list(outcome.values())
    return ", ".join("%d %s" % (values.count(kind), kind) for kind in ("passed", "failed", "skipped")
                     if values.count(kind)) or "**no test ran**"


def interpreter_lines(folder, main_outcome):
    """The table of interpreters: one row per report of a run under another interpreter."""
    lines = ["## Interpreters", "",
             "BILLmanager runs the modules with the system's `/usr/bin/python3`. Every test ran with the modules "
             "under this machine's `/usr/bin/python3`; the runs below repeat them under the other interpreters "
             "BILLmanager meets (pyenv builds, without the distributions' patches). Under 3.9, 3.12 and 3.13 the "
             "module tests are the smoke matrix (`-m smoke`): every command of every module once against the real "
             "servers.", "",
             "| Python | found on | run | tests | last run |", "| --- | --- | --- | --- | --- |",
             "| /usr/bin/python3 | Debian 12 (this machine) | every test | all | %s |" % totals(main_outcome)]
    found = []
    for path in glob.glob(os.path.join(folder, "junit-*-*.xml")):
        match = re.match(r"junit-(modules|library)-(\d+)\.(\d+)\.xml$", os.path.basename(path))
        if match:
            found.append(((int(match.group(2)), int(match.group(3))), match.group(1), path))
    for (major, minor), kind, path in sorted(found):
        version = "%d.%d" % (major, minor)
        which = "smoke matrix" if kind == "modules" and version != "3.6" else "all"
        lines.append("| %s | %s | %s | %s | %s |" % (version, DISTRIBUTIONS.get(version, ""), INTERPRETER_RUNS[kind],
                                                     which, totals(results(path))))
    return lines + [""]


def model_lines(fuzz):
    """The stateful queue model's section: per schema, its steps and what they did."""
    runs = [(part, run) for module in sorted(fuzz) for part, run in sorted(fuzz[module].items())
            if part.startswith(MODEL_PART)]
    if not runs:
        return []
    lines = ["## The queue as a state machine (tests/test_queue_model.py)", "",
             "Hypothesis interleaves enqueues (files of several notices for different users, XSLT and EJS), gateway "
             "faults (refusals, hangs, deaths, garbage), template faults (throws, stops, endless loops, printing), "
             "database failures at any statement and SIGKILLs of the run, on notifytask in utf8mb4, utf8 (utf8mb3) "
             "and latin1 under strict mode. After every step: nothing delivered to anyone but its recipient, "
             "duplicates only for notices in flight at a kill, error_count and err_info true, the queue never "
             "stuck; at the end everything deliverable delivered.", "",
             "| schema | steps | seconds | what the steps did |", "| --- | --- | --- | --- |"]
    for part, run in runs:
        details = ", ".join("%s %s" % (k, v) for k, v in sorted(run.items()) if k not in ("cases", "seconds"))
        lines.append("| %s | %d | %s | %s |" % (part[len(MODEL_PART):].strip(" ()"), run.get("cases", 0),
                                                run.get("seconds", ""), details))
    return lines + [""]


def mutation_lines():
    """The last mutation run's section, as tests/mutation/run.py wrote it; none before the first run."""
    try:
        with open(MUTATION_RUN, encoding="utf-8") as f:
            return [""] + f.read().rstrip("\n").split("\n") + [""]
    except FileNotFoundError:
        return []


def main(argv):
    folder = argv[0]
    outcome = results(os.path.join(folder, "junit.xml"))
    fuzz = {}
    if os.path.exists(os.path.join(folder, "fuzz-counts.json")):
        with open(os.path.join(folder, "fuzz-counts.json")) as f:
            fuzz = json.load(f)
    lines = ["# Reliability: nothing lost, nothing leaked", "",
             "Produced by `make test` from its own run (`tests/reliability.py`): each fault or input class, what "
             "the modules do, the tests that prove it, and their counts in that run. %d tests ran in all." % len(
                 outcome), ""]
    for section, rows in MATRIX:
        lines += ["## " + section, "", "| fault or input | what the modules do | tests | last run |",
                  "| --- | --- | --- | --- |"]
        for fault, behaviour, prefixes in rows:
            lines.append("| %s | %s | %s | %s |" % (fault, behaviour, "<br>".join("`%s`" % p for p in prefixes),
                                                     count(outcome, prefixes)))
        lines.append("")
    generated = {module: {part: run for part, run in runs.items() if not part.startswith(MODEL_PART)}
                 for module, runs in fuzz.items()}
    if any(generated.values()):
        lines += ["## Generated cases in the last run (tests/test_fuzz.py)", "",
                  "| module | cases | of which |", "| --- | --- | --- |"]
        for module, runs in sorted(generated.items()):
            if not runs:
                continue
            total = sum(run.get("cases", 0) for run in runs.values())
            parts = ", ".join("%s %d" % (kind, run.get("cases", 0)) for kind, run in sorted(runs.items()))
            lines.append("| %s | %d | %s |" % (module, total, parts))
        lines.append("")
    lines += model_lines(fuzz)
    lines += interpreter_lines(folder, outcome)
    lines += mutation_lines()
    with open(os.path.join(REPO, "RELIABILITY.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    failed = [k for k, v in outcome.items() if v == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
