"""`make run` (examples/demo.py) as the README tells it: the data stays, a
second run adds to it, and the way back in that it prints works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def demo(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DEMO_RUNS": "20"}
    result = subprocess.run([sys.executable, "-m", "examples.demo", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_make_run_keeps_its_data_and_says_how_to_look_at_it(tmp_path: Path) -> None:
    try:
        first = demo(tmp_path)
        assert "these runs by status: {'completed': 20} (20 runs in the database)" in first
        second = demo(tmp_path)
        assert "these runs by status: {'completed': 20} (40 runs in the database)" in second
        assert "The data stays in .flowworker/" in second
        [url] = re.findall(r"export FLOWWORKER_DATABASE_URL=(\S+)", second)
        psql = re.search(r"^\s+(\S*psql) ", second, re.MULTILINE)
        assert psql is not None, second
        assert Path(tmp_path, psql[1]).exists(), second
        assert "-m examples.demo start" in second
        assert "run --app examples.orders" in second

        started = demo(tmp_path, "start")
        assert f"export FLOWWORKER_DATABASE_URL={url}" in started
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM flowworker.runs "
                                "WHERE status = 'completed'").fetchone() == (40,)
    finally:
        if (tmp_path / ".flowworker" / "pg" / "PG_VERSION").exists():
            demo(tmp_path, "stop")
