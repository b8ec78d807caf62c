"""The ``notifytask`` queue of one notification type: taking tasks, and recording what became of them.

- One ``process`` run at a time per type: an exclusive lock on ``var/<module>.lock`` (released by the
  kernel even when the run is killed). A second run finds it held and leaves.
- Tasks come in small batches, highest priority first [doc]; a task failing in this run is not taken
  again in the same run; a task with ``MAX_ERRORS`` failures is left for staff.
- Each message's outcome goes to a journal file (``var/<module>.journal``) the moment the gateway
  reports it, and the database is updated once per batch from the journal. A run killed mid-batch
  leaves the journal behind; the next run applies it first. So at most the one message in flight
  at the kill is sent twice, and none is lost.
- A delivered task's row is deleted and its file removed; a failed task keeps both, with
  ``error_count`` + 1 and a readable ``err_info``.
"""

import os

from . import notification

BATCH_SIZE = 100        # tasks per batch [doc: "small portions"]
MAX_ERRORS = 10         # [ours] after this many failed attempts a task waits for staff
ERR_INFO_LIMIT = 1000   # characters of err_info kept


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

    def take(self, exclude, forced_only=False):
        """The next batch: [{'id', 'filename', 'error_count'}], highest priority first."""
        sql = ("SELECT id, filename, error_count FROM notifytask WHERE modulename = ? AND error_count < ?")
        params = [self.module, self.max_errors]
        if forced_only:
            sql += " AND forcedonothing = 'on'"
        if exclude:
            sql += " AND id NOT IN (%s)" % ", ".join("?" * len(exclude))
            params += sorted(exclude, key=int)
        sql += " ORDER BY priority DESC, id LIMIT ?"
        return self.db.query(sql, params + [self.batch_size])

    def path_of(self, filename):
        """A task's file: absolute as given, else relative to the MGR5 root [doc]."""
        return filename if os.path.isabs(filename) else self.config.path(filename)

    def record(self, task, index, total, reason=None):
        """Journal the outcome of notice ``index`` of ``total`` of ``task`` (reason None: delivered).

        ``index`` None stands for the whole task (it failed before anything was sent).
        """
        if self._journal is None:
            self._journal = open(self.journal_path, "a", encoding="utf-8")
        reason = " ".join((reason or "").split())[:ERR_INFO_LIMIT]
        self._journal.write("%s\t%s\t%s\t%s\t%s\t%s\n" % ("err" if reason else "ok", task["id"],
                                                          "-" if index is None else index, total,
                                                          task["filename"], reason))
        self._journal.flush()

    def commit(self):
        """Apply the journal to the database in one call, remove delivered files, empty the journal.

        Returns (delivered task count, failed task count).
        """
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        try:
            with open(self.journal_path, encoding="utf-8") as f:
                entries = [line.rstrip("\n").split("\t", 5) for line in f if line.count("\t") >= 5]
        except FileNotFoundError:
            return 0, 0
        outcome = _by_task(entries)
        statements = []
        done_files = []
        failed = 0
        for task_id, (filename, total, sent, reasons) in sorted(outcome.items()):
            if not reasons and total is not None and len(sent) == total:
                statements.append(("DELETE FROM notifytask WHERE id = ?", (task_id,)))
                done_files.append(filename)
                continue
            if sent and total is not None:
                self._keep_undelivered(filename, sent)
            if reasons:
                failed += 1
                statements.append(("UPDATE notifytask SET error_count = error_count + 1, err_info = ? WHERE id = ?",
                                   (reasons[-1][:ERR_INFO_LIMIT], task_id)))
        if statements:
            self.db.batch(statements, transaction=True)
        for filename in done_files:
            try:
                os.unlink(self.path_of(filename))
            except OSError:
                pass
        os.unlink(self.journal_path)
        return len(done_files), failed

    def _keep_undelivered(self, filename, sent):
        """Drop the delivered notices from a partly delivered task's file, so a retry sends only the rest."""
        try:
            notification.rewrite_without(self.path_of(filename), sent)
        except Exception as e:   # the file may be gone already; the retry will say so
            self.log.warning("Cannot rewrite %s after a partial delivery: %s", filename, e)


def _by_task(entries):
    """Journal lines grouped per task: {id: (filename, total notices, delivered indexes, failure reasons)}."""
    tasks = {}
    for status, task_id, index, total, filename, reason in entries:
        known = tasks.setdefault(task_id, [filename, None, set(), []])
        if total.isdigit():
            known[1] = int(total)
        if status == "ok" and index.isdigit():
            known[2].add(int(index))
        elif status == "err":
            known[3].append(reason or "failed")
    return {k: tuple(v) for k, v in tasks.items()}
