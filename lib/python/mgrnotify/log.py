"""The module log, ``var/<module>.log``, in the style of ISPsystem's own modules.

One line per event, as ISPsystem's Python library writes it [src]:
``2026-11-26 10:00:00,123 [PID] gwepochta <colour> INFO text<reset>`` -- its format
``%(asctime)-15s [%(process)d] %(name)s %(color)s %(levelname)s %(message)s<reset>``, with its level
names (Python's, plus EXTINFO) and colours. The level comes from ``etc/debug.conf``. Every event is
redacted first (``redact.redact``), then cut to MAX_LINE characters, then its control characters and
line separators are escaped: neither a secret, nor part of one, nor a forged line can reach the file.
Deliberately not the ``logging`` package: importing it costs more start-up time than
``--command features`` may spend.
"""

import os
import sys
import time

from . import redact

CRITICAL, ERROR, WARNING, INFO, EXTINFO, DEBUG = 2, 3, 4, 5, 6, 9

# debug.conf level -> (level name, colour), both as ISPsystem's Python library writes them [src].
_STYLE = {
    CRITICAL: ("CRITICAL", "\033[1;31m"),
    ERROR: ("ERROR", "\033[1;31m"),
    WARNING: ("WARNING", "\033[1;35m"),
    INFO: ("INFO", "\033[1;32m"),
    EXTINFO: ("EXTINFO", "\033[1;36m"),
    DEBUG: ("DEBUG", "\033[1;33m"),
}
_RESET = "\033[0m"
MAX_LINE = 32768   # characters of one redacted event; a 1 MB notification at debug level is cut, not written whole
# [ours] The most characters of one event the redactor reads (about 1 s of work on the worst input, see
# bench/bench_redact.py); the rest of a longer event is dropped unread, and the end of what is read is masked
# (redact's cut=True), since a secret may straddle the point where it was dropped.
REDACT_LIMIT = 1024 * 1024
# Escaped so that one event is one line and drives no terminal: the C0 controls but tab, DEL, the C1 controls,
# and every other character str.splitlines() takes for a line break (U+2028, U+2029).
_CONTROL = {c: "\\x%02x" % c for c in list(range(32)) + list(range(0x7F, 0xA0)) if c != 9}
_CONTROL.update({10: "\\n", 13: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


class Log:
    """The log of one module run; opened on the first line written."""

    def __init__(self, name, path, level):
        self.name = name
        self.path = path
        self.level = level

    def enabled(self, level):
        """True if a line at ``level`` would be written (to skip building costly debug text)."""
        return level <= self.level

    def write(self, level, text, *args):
        """Write one line at ``level``; ``text % args`` when args are given."""
        if level > self.level:
            return
        if args:
            text = text % args
        text = _redacted_and_cut(str(text))
        if not text.isprintable():   # most lines are; translate() takes milliseconds on a long one
            text = text.translate(_CONTROL)
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        label, colour = _STYLE.get(level, _STYLE[DEBUG])
        line = "%s,%03d [%d] %s %s %s %s%s\n" % (
            stamp, int(now * 1000) % 1000, os.getpid(), self.name, colour, label, text, _RESET)
        try:
            directory = os.path.dirname(self.path)
            if directory and not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
            with open(self.path, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(line)
        except OSError as e:
            # A log that cannot be written must not stop a notification; say so once on stderr.
            sys.stderr.write("%s: cannot write %s: %s\n" % (self.name, self.path, e))
            self.level = 0

    def debug(self, text, *args):
        """Debug detail (level 9): documents in and out, protocol exchanges."""
        self.write(DEBUG, text, *args)

    def extinfo(self, text, *args):
        """Extended information (level 6, the default)."""
        self.write(EXTINFO, text, *args)

    def info(self, text, *args):
        """A request handled (level 5)."""
        self.write(INFO, text, *args)

    def warning(self, text, *args):
        """Something went wrong but work goes on (level 4)."""
        self.write(WARNING, text, *args)

    def error(self, text, *args):
        """A command failed (level 3)."""
        self.write(ERROR, text, *args)

    def exception(self, text, *args):
        """An error with the current exception's traceback (the traceback goes to the log only)."""
        import traceback
        self.write(ERROR, (text % args if args else text) + "\n" + traceback.format_exc().rstrip())


def _redacted_and_cut(text):
    """The event redacted, then cut to MAX_LINE characters (never inside a mask), saying so when cut."""
    size = len(text)
    redacted = redact.redact(text) if size <= REDACT_LIMIT else redact.redact(text[:REDACT_LIMIT], cut=True)
    if size <= REDACT_LIMIT and len(redacted) <= MAX_LINE:
        return redacted
    cut = min(MAX_LINE, len(redacted))
    while 0 < cut < len(redacted) and redacted[cut - 1] == redacted[cut] == "*":
        cut -= 1   # a run of "*" (a mask, or next to one) is kept whole or dropped whole
    return "%s … (cut: the event has %d characters)" % (redacted[:cut], size)


def open_log(config, name):
    """The log of module ``name`` under ``config``'s root, at the level debug.conf sets."""
    return Log(name, config.path("var", name + ".log"), config.log_level(name))
