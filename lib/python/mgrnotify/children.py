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
