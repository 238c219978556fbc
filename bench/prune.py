"""`python -m bench.prune [--runs N]`: retention at scale, for
docs/performance.md ("Retention").

On a throwaway cluster (the benchmark's settings, fsync on): N runs that
ended 8-38 days ago (bench/seed.py: 2 steps, 3 tasks each; 6 % failed or
cancelled, with archived messages), 100 older runs still going and 1,000
recent ones. A worker serves a steady trickle of one-step `bench` runs
(100/s) throughout; claim latency is each trickle run's first claim minus
its start, both by the database clock. Two scenarios, each on its own copy
of the seeded database:

- cli: idle for a while, then `flowworker.ops.prune` (what `flowworker
  prune` calls) deletes everything older than 7 days, 1,000 runs per
  transaction, from its own connection;
- worker: the worker that serves the trickle prunes itself
  (`--prune-after 7d`), on its own pooled connections.

Reported: prune time and rate, the longest batch (the longest any lock was
held), claim latency idle vs during the prune, orphans left (must be 0) and
whether the runs that had not ended, or ended recently, are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from bench import fw, seed
from bench.pg import BenchCluster, wait_until
from bench.proc import stop
from flowworker import ops
from flowworker.ops.retention import prune_batch

SEEDED = "prune_seeded"
TRICKLE_INTERVAL = 0.01  # seconds between trickle starts: 100 runs/s
PRUNE_SPELL = 10.0  # seconds of pruning, then as many idle, and again
OLDER_THAN = timedelta(days=7)
KEPT = ("SELECT run_id FROM flowworker.runs WHERE flow_slug = 'aged' "
        "AND (status = 'started' OR started_at > now() - interval '1 day')")


def say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a console script


@dataclass
class Scenario:
    name: str
    prune_seconds: float = 0.0
    deleted: int = 0
    longest_batch: float | None = None
    idle_ms: list[float] = field(default_factory=list)
    during_ms: list[float] = field(default_factory=list)
    orphans: int = -1
    kept_unchanged: bool = False
    trickle_runs: int = 0


class Trickle:
    """Starts a `bench` run every TRICKLE_INTERVAL seconds until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            next_at = time.monotonic()
            while not self.done.is_set():
                conn.execute("SELECT flowworker.start_flow('bench')")
                self.count += 1
                next_at += TRICKLE_INTERVAL
                self.done.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


def db_now(url: str) -> datetime:
    with psycopg.connect(url, autocommit=True) as conn:
        return ops.database_now(conn)


def claims(url: str) -> list[tuple[datetime, float]]:
    """Each trickle run's start and its first claim's latency in milliseconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.started_at, extract(epoch FROM t.started_at - r.started_at) * 1000 "
            "FROM flowworker.runs r JOIN flowworker.step_tasks t ON t.run_id = r.run_id "
            "WHERE r.flow_slug = 'bench' AND t.started_at IS NOT NULL").fetchall()
    return [(at, float(ms)) for at, ms in rows]


def within(samples: list[tuple[datetime, float]],
           windows: list[tuple[datetime, datetime]]) -> list[float]:
    return [ms for at, ms in samples if any(a <= at < b for a, b in windows)]


def kept_digest(url: str) -> str:
    """A digest of every row of the runs prune must keep, their history and messages."""
    with psycopg.connect(url, autocommit=True) as conn:
        parts = [conn.execute(query).fetchall() for query in (
            f"SELECT * FROM flowworker.runs WHERE run_id IN ({KEPT}) ORDER BY run_id",
            f"SELECT * FROM flowworker.step_states WHERE run_id IN ({KEPT}) ORDER BY 1, 2",
            f"SELECT * FROM flowworker.step_tasks WHERE run_id IN ({KEPT}) ORDER BY 1, 2, 3",
            f"SELECT * FROM flowworker.events WHERE run_id IN ({KEPT}) ORDER BY event_id",
            "SELECT * FROM flowworker.q_aged ORDER BY msg_id",
            f"SELECT a.msg_id FROM flowworker.a_aged a JOIN flowworker.step_tasks t "
            f"ON t.flow_slug = 'aged' AND t.message_id = a.msg_id "
            f"WHERE t.run_id IN ({KEPT}) ORDER BY 1")]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def prepare(bc: BenchCluster, work: Path, runs: int) -> None:
    """The template with the bench flows, then a seeded copy of it, vacuumed."""
    fw.make_template(bc, work)
    url = bc.create_db(SEEDED, fw.TEMPLATE)
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        seed.seed(conn, old_ended=runs, old_going=100, recent_ended=1000)
        conn.execute("VACUUM ANALYZE")
    say(f"» seeded {runs:,} runs in {time.monotonic() - began:.0f} s")


def start_worker(url: str, logdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLOWWORKER_DATABASE_URL": url, "FLOWWORKER_LOG_LEVEL": "INFO",
           "PYTHONPATH": str(fw.ROOT)}
    log = (logdir / f"worker-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen([*fw.worker_command(["bench"], drain=False), *extra], cwd=fw.ROOT,
                            env=env, stdout=log, stderr=log)


def aged_left(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM flowworker.runs "
                           "WHERE flow_slug = 'aged'").fetchone()
    return int(row[0]) if row else -1


def run_scenario(bc: BenchCluster, logdir: Path, name: str, expect_left: int) -> Scenario:
    """name: `cli:R:B` (batches of B runs, 1,000 if not given, from a
    connection of its own, resting R times each batch's time after it, in
    spells of PRUNE_SPELL seconds with as long idle between them: idle and
    pruning samples interleave, so load from outside the benchmark weighs
    on both alike) or `worker` (the worker serving the trickle prunes
    itself, from its start)."""
    result = Scenario(name)
    kind, *options = name.split(":")
    rest = float(options[0]) if options else 0.0
    batch_size = int(options[1]) if len(options) > 1 else 1000
    db, url = bc.fresh(SEEDED)
    before = kept_digest(url)
    bc.checkpoint()
    began = time.monotonic()
    worker = start_worker(url, logdir, *(["--prune-after", "7d"] if kind == "worker" else []))
    pruning: list[tuple[datetime, datetime]] = []
    idle: list[tuple[datetime, datetime]] = []
    try:
        with Trickle(url) as trickle:
            time.sleep(2.0)  # the worker's start-up is not idle time
            if kind == "cli":
                prune_in_spells(url, result, rest, batch_size, pruning, idle)
            else:
                pruning_from = db_now(url)
                wait_until(lambda: aged_left(url) == expect_left, timeout=3600, interval=0.5)
                result.prune_seconds = time.monotonic() - began
                pruning.append((pruning_from, db_now(url)))
            time.sleep(1.0)
        result.trickle_runs = trickle.count
        samples = claims(url)
        result.idle_ms, result.during_ms = within(samples, idle), within(samples, pruning)
        with psycopg.connect(url, autocommit=True) as conn:
            result.orphans = seed.orphans(conn)
        result.kept_unchanged = kept_digest(url) == before and aged_left(url) == expect_left
    finally:
        stop(worker)
        bc.drop_db(db)
    return result


def prune_in_spells(url: str, result: Scenario, rest: float, batch_size: int,
                    pruning: list[tuple[datetime, datetime]],
                    idle: list[tuple[datetime, datetime]]) -> None:
    """What ops.prune does (batches, each followed by `rest` times its time),
    PRUNE_SPELL seconds at a time with as long idle before each spell."""
    longest = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            idle_from = ops.database_now(conn)
            time.sleep(PRUNE_SPELL)
            spell_from = ops.database_now(conn)
            idle.append((idle_from, spell_from))
            until, began, left = time.monotonic() + PRUNE_SPELL, time.monotonic(), 1
            while left and time.monotonic() < until:
                batch_began = time.monotonic()
                left = prune_batch(conn, OLDER_THAN, batch_size)
                took = time.monotonic() - batch_began
                longest = max(longest, took)
                result.deleted += left
                time.sleep(rest * took)
            result.prune_seconds += time.monotonic() - began
            pruning.append((spell_from, ops.database_now(conn)))
            if not left:
                break
    result.longest_batch = longest


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: list[Scenario], runs: int) -> str:
    lines = ["| scenario | prune time | runs/s | longest batch | claim p50 / p95 / p99 "
             "idle (ms) | while pruning (ms) | p50, p95 ratio | orphans | kept rows unchanged |",
             "|---|---|---|---|---|---|---|---|---|"]
    first_idle = next((r.idle_ms for r in results if r.idle_ms), [])
    for r in results:
        idle = r.idle_ms or first_idle  # the worker scenario prunes from its start
        idle_text = "/".join(f"{pct(idle, q):.1f}" for q in (0.5, 0.95, 0.99))
        during = "/".join(f"{pct(r.during_ms, q):.1f}" for q in (0.5, 0.95, 0.99))
        longest = "-" if r.longest_batch is None else f"{r.longest_batch:.2f} s"
        ratios = ", ".join(f"{pct(r.during_ms, q) / pct(idle, q):.2f}x" for q in (0.5, 0.95))
        lines.append(f"| {r.name} | {r.prune_seconds:.0f} s | {runs / r.prune_seconds:,.0f} | "
                     f"{longest} | {idle_text} | {during} | {ratios} | {r.orphans} | "
                     f"{'yes' if r.kept_unchanged else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--scenarios", default="cli:0:100,cli:1:100,worker")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="flowworker-prune-"))
    bc = BenchCluster(home)
    bc.start()
    try:  # the cluster holds gigabytes: it goes when the run ends, however it ends
        prepare(bc, home, args.runs)
        results = []
        for name in args.scenarios.split(","):
            say(f"» scenario {name}")
            results.append(run_scenario(bc, home, name, expect_left=1100))
            r = results[-1]
            say(f"  pruned in {r.prune_seconds:.0f} s; claim p50/p95 idle "
                f"{pct(r.idle_ms, 0.5):.1f}/{pct(r.idle_ms, 0.95):.1f} ms "
                f"({len(r.idle_ms)} claims), while pruning {pct(r.during_ms, 0.5):.1f}/"
                f"{pct(r.during_ms, 0.95):.1f} ms ({len(r.during_ms)}); orphans {r.orphans}")
        table = report(results, args.runs)
        say(table)
        out = fw.ROOT / "bench" / "results" / "prune.md"
        out.write_text(table + "\n")
        say(f"» wrote {out}")
        if any(r.orphans or not r.kept_unchanged for r in results):
            sys.exit(1)
    finally:
        bc.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
