"""Where BILLmanager lives and what its configuration says.

The MGR5 root is the folder above the running script's folder (``/usr/local/mgr5`` for
``/usr/local/mgr5/gate/gwepochta``), or ``$MGR5_ROOT`` when set. ``etc/billmgr.conf`` and then
``etc/billmgr.conf.d/*.conf`` (in name order, later lines win) hold ``Key value`` lines.
"""

import os
import sys

ROOT_ENV = "MGR5_ROOT"

# debug.conf levels [doc]: 1 notices, 2 critical, 3 errors, 4 warnings, 5 requests, 6 extended info,
# 7 remote service notifications, 8 code tracing, 9 debug.
DEFAULT_LOG_LEVEL = 6
# The levels taken as they are; any other number means DEFAULT_LOG_LEVEL, as in ISPsystem's library [src].
# [ours] 1, 7 and 8 are kept too, on the documented scale, where ISPsystem's library makes them 6.
LOG_LEVELS = range(1, 10)


def mgr5_root(script=None):
    """The MGR5 root: $MGR5_ROOT, else the folder above the script's folder (symlinks kept as given)."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return os.path.abspath(env)
    script = os.path.abspath(script or sys.argv[0])
    return os.path.dirname(os.path.dirname(script))


def read_key_values(path):
    """``Key value`` lines of one file as a dict; comments (#) and blank lines skipped; {} if absent."""
    values = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        values[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return values


class Config:
    """One MGR5 installation: its root, billmgr.conf and debug.conf."""

    def __init__(self, root):
        self.root = root
        self._conf = None

    def path(self, *parts):
        """An absolute path under the MGR5 root; absolute parts are kept as they are."""
        return os.path.join(self.root, *parts)

    @property
    def billmgr_conf(self):
        """billmgr.conf merged with billmgr.conf.d/*.conf, read once."""
        if self._conf is None:
            conf = read_key_values(self.path("etc", "billmgr.conf"))
            confd = self.path("etc", "billmgr.conf.d")
            try:
                names = sorted(n for n in os.listdir(confd) if n.endswith(".conf"))
            except OSError:
                names = []
            for name in names:
                conf.update(read_key_values(os.path.join(confd, name)))
            self._conf = conf
        return self._conf

    def get(self, key, default=None):
        """One billmgr.conf value."""
        return self.billmgr_conf.get(key, default)

    def log_level(self, module):
        """The level ``etc/debug.conf`` sets for ``module``; DEFAULT_LOG_LEVEL when no line names it.

        As ISPsystem's Python library reads it [src]: comments skipped, the last line naming the module
        wins, a level that is not a number leaves the line out, a number off the scale (0, 10) means 6.
        [ours] A line names the module by its first word, ``name`` or ``name.<anything>`` (``ntjabber 9``,
        ``ntjabber.* 9``), where ISPsystem's library takes any line containing the name (``gwjabber2 9``
        would set gwjabber's level); and 1, 7 and 8 are kept (LOG_LEVELS). The log writes the lines at
        or below its level and has none at 1, 7 or 8: at 1 it writes nothing, at 7 or 8 what it does at 6.
        """
        level = DEFAULT_LOG_LEVEL
        try:
            with open(self.path("etc", "debug.conf"), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return level
        for line in lines:
            words = line.split()
            if len(words) < 2 or words[0].startswith("#"):
                continue
            if words[0] != module and not words[0].startswith(module + "."):
                continue
            try:
                number = int(words[1])
            except ValueError:
                continue
            level = number if number in LOG_LEVELS else DEFAULT_LOG_LEVEL
        return level

    def do_nothing(self):
        """True while BILLmanager migrates data from another billing: send nothing [doc]."""
        return os.path.exists(self.path("etc", "billmgr.DoNothing"))
