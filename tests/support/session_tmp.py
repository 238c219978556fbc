"""Each pytest session keeps its temporary files in a directory of its own.

Run as root, the tests' PostgreSQL (and pgbouncer) run as another system
user, which must be able to reach its data directory. By default pytest
puts every session's files under one shared /tmp/pytest-of-root and resets
that directory to mode 0700 whenever a session starts: a second session,
even `pytest tests/unit`, cut the first session's server off from its own
files (PANIC: could not open file ".../global/pg_control": Permission
denied) and every later test of the first session failed.

So unless --basetemp is given, the session's base directory is a fresh
one under the system temp dir that no other session changes. Like pytest,
the directories of the three newest finished sessions are kept.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

PREFIX = "flowworker-pytest-"
KEEP = 3


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp:
        return  # the caller chose one
    root = Path(tempfile.gettempdir())
    prune(root)
    config.option.basetemp = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root)


def pytest_report_header(config: pytest.Config) -> str:
    return f"basetemp: {config.option.basetemp}"


def prune(root: Path) -> None:
    """Remove the directories of finished sessions, all but the newest KEEP."""
    finished = [(ended, path) for path in root.glob(f"{PREFIX}*")
                if (ended := _ended_at(path)) is not None]
    for _, path in sorted(finished, reverse=True)[KEEP:]:
        shutil.rmtree(path, ignore_errors=True)


def _ended_at(path: Path) -> float | None:
    """When the session of a directory of ours ended (its last change), or
    None while its process (the pid in its name) runs."""
    try:
        pid = int(path.name.removeprefix(PREFIX).split("-")[0])
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            return None
        os.kill(pid, 0)
    except ProcessLookupError:
        return info.st_mtime
    except (ValueError, OSError):  # not one of ours, gone meanwhile, or another user's pid
        return None
    return None
