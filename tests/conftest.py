"""Fixtures: one MariaDB server per test session, a fresh sandbox MGR5 root per test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox as sandboxlib  # noqa: E402


@pytest.fixture(scope="session")
def mariadb():
    """A private MariaDB server for the whole session."""
    if os.path.exists(sandboxlib.SECRETS_FILE):
        os.unlink(sandboxlib.SECRETS_FILE)
    server = sandboxlib.MariaDB().start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(tmp_path, mariadb):
    """A temporary MGR5 root with its own database, stand-in mgrctl and wrapped child commands."""
    box = sandboxlib.Sandbox(str(tmp_path), mariadb)
    yield box
    box.close()
    leaks = box.leaks()
    assert not leaks, "passwords the suite used appear in what the modules wrote: %s" % leaks
