"""The ``notifytask`` queue of one notification type: taking tasks, and recording what became of them.

- One ``process`` run at a time per type: an exclusive lock on ``var/<module>.lock`` (released by the
  kernel even when the run is killed). A second run finds it held and leaves.
- Tasks come in small batches, highest priority first [doc]. A run walks the queue once, in that order,
  from where its last batch ended (a cursor, so a query stays the same size however long the run): a
  task failing in this run is not taken again in the same run. A task with ``MAX_ERRORS`` failures is
  left for staff.
- Each message's outcome goes to a journal file (``var/<module>.journal``, one JSON object a line) the
  moment the gateway reports it, and the database is updated once per batch from the journal. A run
  killed mid-batch leaves the journal behind; the next run applies it first. So only what was in
  flight at the kill is sent twice (one message, or a windowed gateway's window), and none is lost.
- Applying a journal twice changes nothing more: delivered notices are marked in their file by position
  (never removed), and a failure's ``error_count`` + 1 applies only to the count the task had when it was
  taken.
- A delivered task's row is deleted and its file removed; a failed task keeps both, with ``error_count``
  + 1 and a readable ``err_info`` made to fit the column (its length and character set: old BILLmanager
  databases have ``utf8`` (3-byte) or ``latin1`` tables in strict mode).
- One entry the database refuses never wedges the queue: the batch's statements are then applied one at
  a time, and a refused one is set aside in ``var/<module>.journal.rejected`` with a log line.
"""

import os

from . import notification
from .errors import DatabaseError

BATCH_SIZE = 100        # tasks per batch [doc: "small portions"]
MAX_ERRORS = 10         # [ours] after this many failed attempts a task waits for staff
ERR_INFO_LIMIT = 1000   # characters of err_info kept
# [ours] How err_info is stored when the column cannot hold the reason at all (a trigger, an odd type).
UNSTORABLE_REASON = "Delivery failed; the reason could not be stored here, see var/%s.log"

# MySQL/MariaDB character sets of err_info -> the Python codec that holds the same characters. A charset
# not listed is treated as ASCII: a reason loses letters rather than the update being refused.
CHARSET_CODECS = {
    "utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", "utf16": "utf-16-be", "utf16le": "utf-16-le",
    "utf32": "utf-32-be", "ucs2": "utf-16-be", "latin1": "cp1252", "latin2": "iso8859-2", "cp1250": "cp1250",
    "cp1251": "cp1251", "cp1256": "cp1256", "cp1257": "cp1257", "koi8r": "koi8-r", "koi8u": "koi8-u",
    "greek": "iso8859-7", "hebrew": "iso8859-8", "latin5": "iso8859-9", "latin7": "iso8859-13",
    "cp866": "cp866", "cp850": "cp850", "ascii": "ascii",
}
BMP_ONLY = ("utf8mb3", "utf8", "ucs2")   # 3-byte UTF-8 and UCS-2 hold no character above U+FFFF


class Column:
    """What a text column can hold: its codec, and its length in characters and in bytes."""

    def __init__(self, charset="utf8mb4", characters=None, octets=None):
        self.charset = (charset or "").lower()
        self.codec = CHARSET_CODECS.get(self.charset, "ascii")
        self.characters = characters
        self.octets = octets

    def fit(self, text, limit=ERR_INFO_LIMIT):
        """``text`` as the column can store it: control characters dropped, characters the charset lacks as
        '?', cut to the column's length (characters and bytes) and to ``limit``."""
        text = "".join(c for c in text if c.isprintable() or c == " ")
        text = "".join(self._storable(c) for c in text)
        characters = min(n for n in (limit, self.characters) if n is not None)
        if len(text) > characters:
            text = text[:max(characters - 3, 0)] + "..."[:characters]
        encoded = text.encode(self.codec)
        if self.octets is not None and len(encoded) > self.octets:   # a character cut in half is dropped
            text = encoded[:self.octets].decode(self.codec, "ignore")
        return text

    def _storable(self, char):
        if self.charset in BMP_ONLY and ord(char) > 0xFFFF:
            return "\ufffd"
        try:
            char.encode(self.codec)
            return char
        except UnicodeEncodeError:
            return "?"


class TaskQueue:
    """The queue of one notification type in one MGR5 installation."""

    def __init__(self, config, db, module, log, batch_size=BATCH_SIZE, max_errors=MAX_ERRORS):
        self.config = config
        self.db = db
        self.module = module
        self.log = log
        self.batch_size = batch_size
        self.max_errors = max_errors
        self.journal_path = config.path("var", module + ".journal")
        self._lock = None
        self._journal = None
        self._cursor = None   # (priority, id) of the last task taken in this run
        self._err_info = None

    def lock(self):
        """Take the module's process lock; False if another run holds it."""
        import fcntl
        os.makedirs(self.config.path("var"), exist_ok=True)
        handle = open(self.config.path("var", self.module + ".lock"), "a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock = handle
        return True

    def lock_held(self):
        """True when a process run holds the module's lock now (for ``doctor``). Asked by trying the lock and
        letting go at once; a run starting in that instant leaves, as it would for another run. No lock file
        (no run ever started here) is not created."""
        import fcntl
        try:
            handle = open(self.config.path("var", self.module + ".lock"))
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False

    def journal_size(self, rejected=False):
        """The entries in the journal now (with ``rejected``: those set aside for staff); 0 when there is none."""
        try:
            with open(self.journal_path + (".rejected" if rejected else ""), encoding="utf-8", errors="replace") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def stats(self):
        """This type's queue at a glance (for ``doctor``): {'waiting', 'failing', 'for_staff', 'oldest',
        'highest'} and 'worst', the task with the most failures ({'id', 'error_count', 'err_info'}) or None."""
        where = " FROM notifytask WHERE modulename = ?"
        totals, worst = self.db.batch([
            ("SELECT COUNT(*) AS waiting, COALESCE(SUM(error_count > 0), 0) AS failing,"
             " COALESCE(SUM(error_count >= ?), 0) AS for_staff, MIN(createdate) AS oldest,"
             " MAX(error_count) AS highest" + where, (self.max_errors, self.module)),
            ("SELECT id, error_count, err_info" + where + " AND error_count > 0 ORDER BY error_count DESC, id LIMIT 1",
             (self.module,))])
        stats = {key: _number(value) if key != "oldest" else value for key, value in totals[0].items()}
        stats["worst"] = worst[0] if worst else None
        return stats

    def take(self, forced_only=False):
        """The next batch: [{'id', 'filename', 'error_count', 'priority'}], highest priority first, each task
        after those already taken in this run."""
        sql = ("SELECT id, filename, error_count, COALESCE(priority, 0) AS priority FROM notifytask"
               " WHERE modulename = ? AND error_count < ?")
        params = [self.module, self.max_errors]
        if forced_only:
            sql += " AND forcedonothing = 'on'"
        if self._cursor is not None:
            sql += " AND (COALESCE(priority, 0) < ? OR (COALESCE(priority, 0) = ? AND id > ?))"
            params += [self._cursor[0], self._cursor[0], self._cursor[1]]
        sql += " ORDER BY COALESCE(priority, 0) DESC, id LIMIT ?"
        tasks = self.db.query(sql, params + [self.batch_size])
        if tasks:
            self._cursor = (int(tasks[-1]["priority"]), int(tasks[-1]["id"]))
        return tasks

    def path_of(self, filename):
        """A task's file: absolute as given, else relative to the MGR5 root [doc]."""
        return filename if os.path.isabs(filename) else self.config.path(filename)

    def record(self, task, index, total, reason=None):
        """Journal the outcome of notice ``index`` of ``total`` of ``task`` (reason None: delivered).

        ``index`` None stands for the whole task (it failed before anything was sent).
        """
        import json
        if self._journal is None:
            self._journal = open(self.journal_path, "a", encoding="utf-8")
        entry = {"task": str(task["id"]), "index": index, "total": total, "file": task["filename"],
                 "count": _number(task.get("error_count"))}
        if reason is not None:
            entry["reason"] = " ".join(str(reason).split())[:ERR_INFO_LIMIT] or "failed"
        self._journal.write(json.dumps(entry) + "\n")
        self._journal.flush()

    def commit(self):
        """Apply the journal to the database, mark or remove the files, empty the journal.

        Returns (delivered task count, failed task count). DatabaseError only when the database cannot be
        reached: the journal is then kept for the next run.
        """
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            with open(self.journal_path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return 0, 0
        changes = []   # (task id, statement, its _Outcome)
        delivered = failed = 0
        for task_id, task in sorted(_by_task(lines).items(), key=lambda item: int(item[0])):
            task.done = not task.reasons and task.total is not None and len(task.sent) == task.total
            if task.done:
                changes.append((task_id, ("DELETE FROM notifytask WHERE id = ?", (task_id,)), task))
                continue
            if task.sent and task.total is not None:
                self._keep_undelivered(task.file, task.sent)
            if task.reasons:
                failed += 1
                changes.append((task_id, self._failure(task_id, task, task.reasons[-1]), task))
        applied = self._apply(changes)
        for task_id, _, task in changes:
            if not task.done:
                continue
            if task_id in applied:
                delivered += 1
                try:
                    os.unlink(self.path_of(task.file))
                except OSError:
                    pass
            else:   # the row stays: the marks keep the next run from sending it again
                self._keep_undelivered(task.file, task.sent)
        os.unlink(self.journal_path)
        return delivered, failed

    def _failure(self, task_id, task, reason):
        """The UPDATE for a failed task; it applies to the error count the task was taken with, so a journal
        applied twice counts the failure once."""
        sql = "UPDATE notifytask SET error_count = error_count + 1, err_info = ? WHERE id = ?"
        params = [self.err_info_column().fit(reason), task_id]
        if task.count is not None:
            sql += " AND error_count = ?"
            params.append(task.count)
        return sql, tuple(params)

    def _apply(self, changes):
        """Run the statements in one transaction; when the database refuses it, one at a time, each refused
        one set aside. The ids of the tasks whose statement took effect."""
        if not changes:
            return set()
        try:
            self.db.batch([statement for _, statement, _ in changes], transaction=True)
            return {task_id for task_id, _, _ in changes}
        except DatabaseError as e:
            if not e.statement_refused:   # unreachable, or the login refused: keep the journal for the next run
                raise
            self.log.warning("The database refused this batch's outcome (%s); applying it task by task", e.message)
        applied = set()
        for task_id, statement, task in changes:
            if self._apply_one(task_id, statement, task.lines):
                applied.add(task_id)
        return applied

    def _apply_one(self, task_id, statement, lines):
        sql, params = statement
        attempts = [statement]
        if sql.startswith("UPDATE"):   # the reason itself may be what the column refuses
            attempts.append((sql, (self.err_info_column().fit(UNSTORABLE_REASON % self.module),) + params[1:]))
        for attempt in attempts:
            try:
                self.db.execute(*attempt)
                return True
            except DatabaseError as e:
                if not e.statement_refused:
                    raise
                refusal = e.message
        self._set_aside(task_id, lines, refusal)
        return False

    def _set_aside(self, task_id, lines, refusal):
        """Keep a refused task's journal lines for staff, and say so in the log."""
        path = self.journal_path + ".rejected"
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        self.log.error("Task %s: the database refused its outcome (%s); its journal lines are kept in %s and the "
                       "queue goes on", task_id, refusal, path)

    def err_info_column(self):
        """What ``notifytask.err_info`` can hold, asked once per run (utf8mb4 TEXT when the schema won't say)."""
        if self._err_info is None:
            try:
                rows = self.db.query("SELECT CHARACTER_SET_NAME AS charset, CHARACTER_MAXIMUM_LENGTH AS characters,"
                                     " CHARACTER_OCTET_LENGTH AS octets FROM information_schema.COLUMNS"
                                     " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notifytask'"
                                     " AND COLUMN_NAME = 'err_info'")
            except DatabaseError as e:
                if not e.statement_refused:
                    raise
                rows = []
            row = rows[0] if rows else {}
            self._err_info = Column(row.get("charset") or "utf8mb4", _number(row.get("characters")),
                                    _number(row.get("octets")))
        return self._err_info

    def _keep_undelivered(self, filename, sent):
        """Mark the delivered notices of a partly delivered task's file, so a retry sends only the rest."""
        try:
            notification.mark_delivered(self.path_of(filename), sent)
        except Exception as e:   # the file may be gone already; the retry will say so
            self.log.warning("Cannot mark the delivered notices in %s: %s", filename, e)


class _Outcome:
    """What the journal says of one task: its file, notice count, delivered indexes, failure reasons."""

    def __init__(self, filename):
        self.file = filename
        self.total = None
        self.count = None   # error_count when the task was taken
        self.sent = set()
        self.reasons = []
        self.lines = []
        self.done = False


def _by_task(lines):
    """Journal lines grouped per task: {id: _Outcome}. A torn last line (a kill mid-write) is skipped: its
    message counts as not delivered. Lines of the tab-separated journal of earlier versions are read too."""
    import json
    tasks = {}
    for line in lines:
        try:
            entry = json.loads(line) if line.startswith("{") else _tabbed(line)
            task_id = str(int(entry["task"]))
        except (ValueError, KeyError, TypeError):
            continue
        known = tasks.setdefault(task_id, _Outcome(str(entry.get("file", ""))))
        known.lines.append(line)
        if isinstance(entry.get("total"), int):
            known.total = entry["total"]
        if isinstance(entry.get("count"), int):
            known.count = entry["count"]
        if "reason" in entry:
            known.reasons.append(str(entry["reason"]) or "failed")
        elif isinstance(entry.get("index"), int):
            known.sent.add(entry["index"])
    return tasks


def _tabbed(line):
    """An entry of the journal format before JSON: status, task, index, total, filename, reason."""
    status, task_id, index, total, filename, reason = line.split("\t", 5)
    entry = {"task": task_id, "file": filename, "index": int(index) if index.isdigit() else None,
             "total": int(total) if total.isdigit() else None}
    if status == "err":
        entry["reason"] = reason
    return entry


def _number(value):
    """A whole number from a database field or journal value, or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
