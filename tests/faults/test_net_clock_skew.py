
"""RELIABILITY D9: worker clocks skewed by -10 and +10 minutes (libfaketime,
Debian package `libfaketime`, LD_PRELOADed into the worker processes), and
database sessions in an odd time zone (Pacific/Chatham, UTC+12:45/+13:45,
through `options=-c TimeZone=...` in the worker's database URL; the worker
process's own TZ is Asia/Kathmandu, UTC+5:45).

All time must come from the database clock: workers send durations, never
timestamps. Everything below is measured in database time (run and ledger
timestamps written by `clock_timestamp()`/`now()` on the server).

Pass, for each skew:
- no late start: a run's task starts within a poll bound of start_flow;
- retry delays within +-1 s of base_delay * 2^(n-1), and never early;
- no early re-claim: a task whose worker was killed is re-claimed no sooner
  than its timeout + claim_grace after the claim, and not much later.
Missing libfaketime fails the test with the command that installs it.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import itertools
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from flowworker.daemon.db_asyncpg import connect
from tests.acceptance.harness import (
    Database,
    Ledger,
    WorkerProcess,
    apply_flows,
    as_url,
    wait_until,
)
from tests.faults.chaos.flows import BACKOFF_FAILURES
from tests.support.worker_fixtures import (  # noqa: F401 - default_app used by name:
    Spawn,  # these workers run the acceptance app, not the faults conftest's
    default_app,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

APP = "tests.faults.chaos.flows"
INSTALL_HINT = "run scripts/install-test-deps.sh as root (make test does)"
SESSION_TZ = "Pacific/Chatham"
PROCESS_TZ = "Asia/Kathmandu"
SKEW_SECONDS = 600
POLL_MAX = 0.2  # seconds; keeps the poll part of every measured delay small
BASE_DELAY = 1  # the backoff flow's
VT = 3 + 5  # gated_kill: task timeout + claim_grace
START_BOUND = 1.5  # seconds from start_flow to the first task's execution
PINGS = 3
GATED = 4


def faketime_library() -> str:
    found = sorted(glob.glob("/usr/lib/*-linux-gnu/faketime/libfaketime.so.1")
                   + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.fail(f"libfaketime is not installed; {INSTALL_HINT}", pytrace=False)
    return found[0]


def with_time_zone(url: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-c%20TimeZone%3D{SESSION_TZ.replace('/', '%2F')}"


async def session_time_zone(url: str) -> str:
    conn = await connect(url)
    try:
        return str(await conn.fetchval("SHOW TimeZone"))
    finally:
        await conn.close()


def seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def run_started_at(db: Database, run_id: uuid.UUID) -> datetime:
    value: datetime = db.scalar("SELECT started_at FROM flowworker.runs WHERE run_id = %s",
                                (run_id,))
    return value


@pytest.mark.parametrize("skew", ["-10m", "+10m"])
def test_skewed_worker_clocks_and_odd_time_zone(
        skew: str, db: Database, ledger: Ledger, spawn: Spawn, db_url: str,
        tmp_path: Path) -> None:
    apply_flows(db_url, APP)
    url = with_time_zone(as_url(db_url))
    assert asyncio.run(session_time_zone(url)) == SESSION_TZ
    env = {"LD_PRELOAD": faketime_library(), "FAKETIME": skew, "TZ": PROCESS_TZ,
           "FLOWWORKER_DATABASE_URL": url}
    args = ["--poll-max-interval", str(POLL_MAX), "--concurrency", "10"]

    def start(name: str) -> WorkerProcess:
        return spawn("ping", "backoff", "gated_kill", app=APP, name=name, database_url=url,
                     env=env, args=args)

    victim = start("victim")
    # libfaketime took: the worker's log clock is off by the skew.
    ready = victim.find("worker.ready")[0]
    logged = datetime.fromisoformat(str(ready["ts"]).replace("Z", "+00:00")).timestamp()
    offset = logged - float(ready["_received"])
    expected = SKEW_SECONDS if skew.startswith("+") else -SKEW_SECONDS
    assert abs(offset - expected) < 30, f"worker clock offset {offset:.0f} s, not {skew}"

    measured: list[str] = [f"worker clock offset {offset:+.0f} s"]

    # No late start.
    for _ in range(PINGS):
        run_id = db.start_run("ping", {})
        [row] = wait_until(functools.partial(ledger.rows, run_ids=[run_id]), timeout=10,
                           interval=0.02, message=lambda: "the ping to run\n" + victim.tail())
        delay = seconds(row.at, run_started_at(db, run_id))
        assert 0 <= delay <= START_BOUND, f"started {delay:.2f} s after start_flow"
        measured.append(f"start {delay:.3f} s")

    # Retry delays, in database time.
    run_id = db.start_run("backoff", {})
    assert db.wait_runs([run_id], timeout=30, workers=[victim]) == {"completed": 1}
    attempts = ledger.rows(run_ids=[run_id])
    assert [row.attempt for row in attempts] == list(range(1, BACKOFF_FAILURES + 2))
    assert seconds(attempts[0].at, run_started_at(db, run_id)) <= START_BOUND
    for earlier, later in itertools.pairwise(attempts):
        formula = BASE_DELAY * 2 ** (earlier.attempt - 1)
        waited = seconds(later.at, earlier.at)
        measured.append(f"retry {later.attempt}: {waited:.3f} s (formula {formula} s)")
        assert waited >= formula, (
            f"attempt {later.attempt} ran {waited:.2f} s after attempt {earlier.attempt}: "
            f"before its retry delay of {formula} s")
        assert abs(waited - formula) <= 1.0, (
            f"attempt {later.attempt} ran {waited:.2f} s after attempt {earlier.attempt}; "
            f"the retry delay is {formula} s")

    # No early re-claim: the victim dies holding tasks; a survivor re-claims them.
    gate = tmp_path / "gate"
    run_ids = db.start_runs("gated_kill", [{"gate": str(gate)}] * GATED)
    wait_until(lambda: ledger.count(run_ids=run_ids, step="hold") == GATED, timeout=10,
               message=lambda: "the hold tasks to run in the victim\n" + victim.tail())
    survivor = start("survivor")
    victim.kill()
    gate.touch()
    assert db.wait_runs(run_ids, timeout=VT + 20, workers=[survivor]) == {"completed": GATED}
    holds = ledger.rows(run_ids=run_ids, step="hold")
    first = {row.run_id: row for row in holds if row.attempt == 1}
    second = {row.run_id: row for row in holds if row.attempt == 2}
    assert set(first) == set(second) == set(run_ids), holds
    for run_id in run_ids:
        assert first[run_id].pid == victim.pid
        assert second[run_id].pid == survivor.pid
        waited = seconds(second[run_id].at, first[run_id].at)
        measured.append(f"re-claim {waited:.3f} s (vt {VT} s)")
        assert waited >= VT - 0.25, f"re-claimed {waited:.2f} s after the claim, before vt"
        assert waited <= VT + 2.0, f"re-claimed {waited:.2f} s after the claim: late"
    print(f"\nD9 {skew}: " + "; ".join(measured))  # noqa: T201
