"""Issue acceptance #7: how soon an idle worker starts a run's first task
after the `start_flow` commit, with NOTIFY and with polling only.

The figures are printed, not held to a tight bound: this machine is shared.
"""

from __future__ import annotations

import random
import time
from functools import partial

import pytest

from tests.acceptance.harness import Database, Ledger, WorkerProcess, percentile, wait_until
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance


def describe(i: int, worker: WorkerProcess) -> str:
    return f"run {i} to start\n" + worker.tail()


@pytest.mark.parametrize(("mode", "args", "runs", "bound", "idle"), [
    # The fallback poll is slowed down to >= 2 s, so staying under 1 s takes NOTIFY.
    pytest.param("notify", ["--signal", "notify", "--poll-min-interval", "2",
                            "--poll-max-interval", "5"], 50, 1.0, (0.02, 0.2), id="notify"),
    pytest.param("poll", ["--signal", "poll", "--poll-min-interval", "0.05",
                          "--poll-max-interval", "0.5"], 20, 0.5 + 0.5, (0.3, 0.8), id="poll"),
])
def test_idle_worker_starts_a_new_run_promptly(
        mode: str, args: list[str], runs: int, bound: float, idle: tuple[float, float],
        db: Database, ledger: Ledger, spawn: Spawn, capsys: pytest.CaptureFixture[str]) -> None:
    worker = spawn("ping", args=args)
    shaping = random.Random(7)
    latencies: list[float] = []
    for i in range(runs):
        # Workload shaping, not synchronisation: leave the worker idle for a while
        # (long enough, in poll mode, for its poll interval to back off).
        time.sleep(shaping.uniform(*idle))
        run_id = db.start_run("ping", {"i": i})
        committed = time.time()

        [row] = wait_until(partial(ledger.rows, run_ids=[run_id]), timeout=10, interval=0.002,
                           message=partial(describe, i, worker))
        latencies.append(row.at.timestamp() - committed)
        db.wait_runs([run_id], timeout=10, workers=[worker])

    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    with capsys.disabled():
        print(f"\n[latency {mode}] {runs} runs, commit -> first task started: "  # noqa: T201
              f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < bound, f"{mode}: slowest start {max(latencies):.3f} s > {bound} s"
