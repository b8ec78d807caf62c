""".ci/deps without root (issue 14): it runs nothing, and prints every command it would run."""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What .ci/deps needs to look around; node, setpriv, sudo and systemctl are left out, so they count as missing.
TOOLS = ("bash", "dpkg-query", "grep", "id", "tr", "dirname")


@pytest.fixture
def bare_path():
    """A PATH folder everyone may read: the tools above, and a python3 that lacks every module and records its
    arguments (so a pip run would show)."""
    if not all(shutil.which(tool) for tool in TOOLS):
        pytest.skip("needs %s (a Debian or Ubuntu machine)" % ", ".join(TOOLS))
    folder = tempfile.mkdtemp(prefix="mgrn-deps-")
    os.chmod(folder, 0o755)
    for tool in TOOLS:
        os.symlink(shutil.which(tool), os.path.join(folder, tool))
    calls = os.path.join(folder, "python3.calls")
    with open(calls, "w"):
        pass
    os.chmod(calls, 0o666)
    python = os.path.join(folder, "python3")
    with open(python, "w") as f:
        f.write('#!/bin/sh\necho "$@" >> %s\nexit 1\n' % calls)
    os.chmod(python, 0o755)
    yield folder
    shutil.rmtree(folder)


def test_without_root_every_command_is_printed_and_none_runs(bare_path):
    command = ["bash", ".ci/deps"]
    if os.geteuid() == 0:   # become nobody, as a developer without root would be
        nobody = pwd.getpwnam("nobody")
        command = [shutil.which("setpriv"), "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                   "--clear-groups", "--"] + command
    done = subprocess.run(command, cwd=REPO, env={"PATH": bare_path, "LANG": "C.UTF-8"}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 1, done.stderr
    assert b"Dependencies are in place" not in done.stdout
    lines = done.stderr.decode().splitlines()
    assert lines[0] == "Nothing was installed: there is no root here (nor sudo without a password). Run as root:"
    plan = [line[2:] for line in lines[1:]]
    assert plan[0] == "env DEBIAN_FRONTEND=noninteractive apt-get update -q"
    install = plan[1].split()
    assert install[:7] == ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
                           "--no-install-recommends"]
    assert {"nodejs", "setpriv"} <= set(install[7:])
    assert plan[2] == ("python3 -m pip install -q -r tests/requirements.txt || env DEBIAN_FRONTEND=noninteractive "
                       "apt-get install -y -q --no-install-recommends python3-pytest python3-aiosmtpd "
                       "python3-hypothesis python3-lxml python3-defusedxml")
    with open(os.path.join(bare_path, "python3.calls")) as f:
        assert [line.split()[0] for line in f] == ["-c"], "only the import check may run"
