"""D11: 32 concurrent start_flow callers, each starting one run per
transaction, with NOTIFY on (flowworker.config 'notify' = 1) and off (= 0).
Pass: the p99 enqueue latency with NOTIFY is at most 1.5 x without it (in
one of up to three rounds: see the test), and a
listener draining as it goes gets exactly one data-free notification per
transaction with NOTIFY on (each run queues two root tasks, two sends that
must fold into one) and none with it off.
(Fifty runs in one transaction notifying once is tests/sql/start_flow/test_notify.py.)

Blocks of each mode are interleaved, so that whatever else the machine does
meanwhile falls on both modes alike."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flowworker.devdb import LocalCluster
from flowworker.migrator import migrate
from tests.sql.helpers import define
from tests.sql.start_flow.test_notify import SENTINEL

CALLERS = 32
PER_CALLER = 25
BLOCKS = ("off", "on", "on", "off", "off", "on")
CHANNEL = "flowworker_load"
P99_LIMIT = 1.5
ROUNDS = 3



def report(text: str) -> None:
    """What the run measured, shown with pytest -s."""
    print(text)  # noqa: T201


class Drain:
    """A listener that keeps reading, as a worker would, counting what comes
    on CHANNEL until the sentinel NOTIFY carrying `until` arrives."""

    def __init__(self, conn: psycopg.Connection, until: str) -> None:
        self.conn = conn
        self.until = until
        self.payloads: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self) -> None:
        try:
            for n in self.conn.notifies(timeout=120):
                if n.channel == SENTINEL and n.payload == self.until:
                    return
                if n.channel == CHANNEL:
                    self.payloads.append(n.payload)
            raise AssertionError(f"sentinel {self.until} not received")
        except BaseException as exc:
            self.error = exc

    def finish(self, admin: psycopg.Connection) -> list[str]:
        """Everything committed before now has been delivered once our own
        sentinel, sent after it, has (notifications arrive in commit order)."""
        admin.execute("SELECT pg_notify(%s, %s)", (SENTINEL, self.until))
        self.thread.join(timeout=150)
        assert not self.thread.is_alive(), "listener hung"
        if self.error is not None:
            raise self.error
        return self.payloads


def enqueue_block(db_url: str, flow: str) -> list[float]:
    """CALLERS threads, own connections, released together; each starts
    PER_CALLER runs, one per (autocommit) transaction. Seconds per call."""
    barrier = threading.Barrier(CALLERS)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        mine: list[float] = []
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                barrier.wait(timeout=60)
                for _ in range(PER_CALLER):
                    t0 = time.perf_counter()
                    conn.execute("SELECT run_id FROM flowworker.start_flow(%s)", (flow,)).fetchone()
                    mine.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    if errors:
        raise errors[0]
    assert len(latencies) == CALLERS * PER_CALLER
    return latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.fixture(params=["test-cluster", "durable"])
def load_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[str]:
    """The session's test cluster (fsync and synchronous_commit off, as every
    test runs), or, opt-in, a cluster of its own that commits durably, where
    the global lock NOTIFY takes at commit is held across the WAL flush."""
    if request.param == "test-cluster":
        yield db_url
        return
    if not os.environ.get("FLOWWORKER_D11_DURABLE"):
        pytest.skip("opt-in: FLOWWORKER_D11_DURABLE=1 measures on a cluster with fsync on")
    cluster = LocalCluster(tmp_path / "pg")
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE d11")
            settings = admin.execute("SELECT current_setting('fsync'), "
                                     "current_setting('synchronous_commit')").fetchone()
            assert settings == ("on", "on")
        migrate(cluster.url("d11"))
        yield cluster.url("d11")
    finally:
        cluster.stop("fast")


def measure_round(conn: psycopg.Connection, listener: psycopg.Connection, load_url: str,
                  round_no: int) -> dict[str, tuple[float, float, float, float, float]]:
    """One round of interleaved blocks; every block's notifications checked.
    Per mode: p50, p99, max, mean (ms) and runs/s."""
    samples: dict[str, list[float]] = {"on": [], "off": []}
    wall: dict[str, float] = {"on": 0.0, "off": 0.0}
    for i, mode in enumerate(BLOCKS):
        conn.execute("UPDATE flowworker.config SET value = %s WHERE name = 'notify'",
                     (1 if mode == "on" else 0,))
        drain = Drain(listener, f"round-{round_no}-block-{i}")
        started = time.perf_counter()
        samples[mode] += enqueue_block(load_url, "load")
        wall[mode] += time.perf_counter() - started
        payloads = drain.finish(conn)
        transactions = CALLERS * PER_CALLER
        assert payloads == ([""] * transactions if mode == "on" else []), (
            mode, len(payloads), set(payloads))
    return {mode: (quantile(values, 0.50) * 1000, quantile(values, 0.99) * 1000,
                   max(values) * 1000, statistics.fmean(values) * 1000,
                   len(values) / wall[mode])
            for mode, values in samples.items()}


@pytest.mark.slow
def test_notify_costs_enqueuers_little_and_folds_per_transaction(load_url: str) -> None:
    with psycopg.connect(load_url, autocommit=True) as conn, \
            psycopg.connect(load_url, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(SENTINEL)))
        define(conn, "load", {"a": [], "b": []})  # two root steps: two sends per run
        drain = Drain(listener, "warm-up")
        enqueue_block(load_url, "load")  # warm-up: connections, plans, caches
        assert drain.finish(conn) == [""] * (CALLERS * PER_CALLER)  # 'notify' is 1 by default

        # A p99 of 32 callers on a small shared machine swings with whatever
        # else runs there: a spike that lands on one mode's blocks can double
        # it. A round within the limit passes; NOTIFY that really costs
        # enqueuers more fails every round.
        ratios = []
        for round_no in range(ROUNDS):
            stats = measure_round(conn, listener, load_url, round_no)
            report(f"\nD11 round {round_no + 1}: {CALLERS} callers, "
                   f"{CALLERS * PER_CALLER * BLOCKS.count('on')} single-run transactions per mode")
            for mode, (p50, p99, worst, mean, rate) in stats.items():
                report(f"  NOTIFY {mode:3}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                       f"max {worst:7.2f} ms  mean {mean:6.2f} ms  {rate:7.0f} runs/s")
            ratios.append(stats["on"][1] / stats["off"][1])
            report(f"  p99 on / off = {ratios[-1]:.2f} (limit {P99_LIMIT})")
            if ratios[-1] <= P99_LIMIT:
                return
    raise AssertionError(f"NOTIFY's enqueue p99 over {P99_LIMIT} x without it in every round: "
                         + ", ".join(f"{r:.2f}" for r in ratios))
