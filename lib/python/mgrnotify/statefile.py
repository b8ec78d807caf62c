"""Small state files under var/ that must survive a crash whole: a lock per resource, and files replaced atomically.

``FileLock`` is an flock on a file, so two runs of one gateway never hand over the same messages (gwmail's mailbox,
gwmax's updates); ``replace_file`` writes a file so that a crash leaves the old content or the new, never half.
"""

import os


class FileLock:
    """An flock on a file: the run holding it fetches, answers and marks; a second run waits for it, and then finds
    what the first handed over marked. Closing the file (or the process ending in any way) releases it."""

    POLL = 0.05   # seconds between tries while another run holds the lock

    def __init__(self, path):
        self.path = path
        self.file = None

    def acquire(self, wait):
        """Take the lock, waiting up to ``wait`` seconds; False if another run still holds it by then."""
        import fcntl
        import time
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.file = open(self.path, "a")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    return False
                time.sleep(self.POLL)

    def release(self):
        """Let the next run in."""
        if self.file is not None:
            self.file.close()
            self.file = None


def replace_file(path, text, encoding="ascii"):
    """Make ``text`` the content of ``path``, atomically: written beside it, synced, then renamed over it."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding=encoding) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
