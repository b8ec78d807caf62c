"""Child processes of a run (template renderers, gateways): started so they die with it, stopped cleanly.

Only os is imported at load; ctypes and signal when a child is started.
"""

import os

PR_SET_PDEATHSIG = 1   # <linux/prctl.h>


def dies_with_parent():
    """A preexec_fn that has the kernel kill the child when the starting thread dies (Linux); None elsewhere."""
    import ctypes
    import signal
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up here: the child runs as little as it can
    except (OSError, AttributeError):
        return None
    parent, sigkill = os.getpid(), int(signal.SIGKILL)

    def set_death_signal():
        prctl(PR_SET_PDEATHSIG, sigkill)
        if os.getppid() != parent:   # the parent died before prctl took effect: no signal would come
            os._exit(1)
    return set_death_signal


def dies_with_run(lifeline_end):
    """A preexec_fn: the helper dies with this process, also after it has given up root.

    The parent-death signal (dies_with_parent) is cleared by the kernel when a process changes its
    uid, as the EJS renderer does. So the helper also holds the read end of a pipe whose write end only this
    process has; when that closes, however this process ends, the kernel sends the reader SIGKILL
    (F_SETSIG on an O_ASYNC pipe; the owner is set before node gives up root, so it reaches it as nobody too).
    """
    import fcntl
    import signal
    parent_death = dies_with_parent()

    def set_up():
        if parent_death is not None:
            parent_death()
        fcntl.fcntl(lifeline_end, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(lifeline_end, fcntl.F_SETSIG, signal.SIGKILL)
        fcntl.fcntl(lifeline_end, fcntl.F_SETFL, fcntl.fcntl(lifeline_end, fcntl.F_GETFL) | os.O_ASYNC)
    return set_up


def stop(process):
    """Kill ``process`` (a Popen) if it still runs, reap it and close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def exit_status(returncode):
    """'exit status N' or 'killed by signal N', for sentences."""
    if returncode < 0:
        return "killed by signal %d" % -returncode
    return "exit status %d" % returncode
