"""The flowworker side: a migrated template database, runs started in
batches, and real `python -m flowworker run` worker processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.apps import CHAIN_STEPS, FLOWS, STAMPS_ENV, STEPS_PER_DAG_RUN
from bench.pg import BenchCluster, wait_until
from bench.proc import Exit, log_problems, reap, stop, vm_hwm_kib
from flowworker.client import start_flow, start_flows
from flowworker.compiler import write_flow_file
from flowworker.migrator import migrate

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "fw_template"
START_BATCH = 1000
BATCH_SIZE = 100
# Two batches of slots: one batch runs while the next is claimed, as the
# README recommends for throughput. (PgQueuer's drain has no in-flight limit.)
CONCURRENCY = 2 * BATCH_SIZE


def worker_command(flows: list[str], *, drain: bool) -> list[str]:
    """The exact worker command line (the database URL comes from the environment)."""
    cmd = [sys.executable, "-m", "flowworker", "run", "--app", "bench.apps",
           "--concurrency", str(CONCURRENCY), "--batch-size", str(BATCH_SIZE),
           "--metrics-addr", "off", "--log-format", "json"]
    for slug in flows:
        cmd += ["--flow", slug]
    return [*cmd, "--drain"] if drain else cmd


@dataclass
class WorkerSet:
    """Worker processes with their stderr files."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def problems(self) -> list[str]:
        return log_problems(self.logs)


def start_workers(url: str, flows: list[str], count: int, logdir: Path, *, drain: bool,
                  stamps: Path | None = None) -> WorkerSet:
    env = {**os.environ, "FLOWWORKER_DATABASE_URL": url, "FLOWWORKER_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT)}
    if stamps is not None:
        env[STAMPS_ENV] = str(stamps)
    workers = WorkerSet()
    for _ in range(count):
        log = logdir / f"worker-{uuid.uuid4().hex[:8]}.log"
        with log.open("wb") as err:
            workers.procs.append(subprocess.Popen(worker_command(flows, drain=drain), cwd=ROOT,
                                                  env=env, stdout=err, stderr=err))
        workers.logs.append(log)
    return workers


def make_template(bc: BenchCluster, workdir: Path) -> None:
    """Migrate a template database and apply the bench flows, once."""
    url = bc.create_db(TEMPLATE)
    migrate(url)
    flow_dir = workdir / "flows"
    for flow in FLOWS:
        write_flow_file(flow, flow_dir)
    migrate(url, flow_dir)


def start_batched(url: str, flow: str, count: int) -> float:
    """Start count runs with start_flows, START_BATCH per call and transaction;
    returns the seconds it took."""
    began = time.perf_counter()
    with psycopg.connect(url) as conn:
        left = count
        while left > 0:
            size = min(START_BATCH, left)
            start_flows(conn, flow, [{}] * size)
            conn.commit()
            left -= size
    return time.perf_counter() - began


def start_single(url: str, count: int) -> float:
    """Start count runs with the client API, one transaction each; returns seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        for _ in range(count):
            start_flow(conn, "bench", {})
        return time.perf_counter() - began


@dataclass
class DrainResult:
    tasks: int
    seconds: float
    enqueue_seconds: float
    peak_rss_kib: int
    problems: list[str]
    ok: bool  # every task done, every worker exited 0 by itself: the figures count

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else float("nan")


def _task_window(url: str, flow: str) -> tuple[int, int, float]:
    """(completed tasks, all tasks, seconds from first claim to last completion)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*),"
            " extract(epoch FROM max(completed_at) - min(started_at))::float8"
            " FROM flowworker.step_tasks WHERE flow_slug = %s", (flow,)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), float(row[2] or 0.0)


def _unfinished_runs(url: str, flow: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM flowworker.runs WHERE flow_slug = %s"
                            " AND status <> 'completed' GROUP BY 1", (flow,)).fetchall()
    return {str(status): int(n) for status, n in rows}


def drain(bc: BenchCluster, logdir: Path, flow: str, runs: int, procs: int,
          expected_tasks: int) -> DrainResult:
    """Start `runs` runs, then drain them with `procs` workers started together."""
    name, url = bc.fresh(TEMPLATE)
    try:
        enqueue_seconds = start_batched(url, flow, runs)
        bc.checkpoint()
        workers = start_workers(url, [flow], procs, logdir, drain=True)
        exits = [reap(p, timeout=120 + expected_tasks / 200) for p in workers.procs]
        done, total, seconds = _task_window(url, flow)
        problems = workers.problems() + exit_problems(exits)
        if done != expected_tasks or total != expected_tasks:
            problems.append(f"{flow}: {done} of {total} tasks completed, "
                            f"{expected_tasks} expected")
        unfinished = _unfinished_runs(url, flow)
        if unfinished:
            problems.append(f"{flow}: runs not completed after the drain: {unfinished}")
        ok = (done == expected_tasks == total and not unfinished
              and all(e.code == 0 and not e.timed_out for e in exits))
        return DrainResult(done, seconds, enqueue_seconds,
                           max(e.peak_rss_kib for e in exits), problems, ok)
    finally:
        bc.drop_db(name)


def exit_problems(exits: list[Exit]) -> list[str]:
    found = []
    for e in exits:
        if e.timed_out:
            found.append("a --drain worker did not exit by itself and was stopped")
        if e.code != 0:
            found.append(f"a worker exited with code {e.code}")
    return found


def dag_runs(bc: BenchCluster, logdir: Path, runs: int) -> DrainResult:
    return drain(bc, logdir, "dag", runs, 1, runs * STEPS_PER_DAG_RUN)


@dataclass
class LatencyResult:
    start_latency: list[float]  # seconds: before start_flow -> handler start
    hop_latency: list[float]  # seconds: step k completed_at -> step k+1 handler start
    idle_rss_kib: int
    problems: list[str]
    ok: bool


def _read_stamps(path: Path) -> dict[tuple[str, str], float]:
    stamps: dict[tuple[str, str], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            run_id, step, at = line.split()
            stamps[run_id, step] = float(at)
    return stamps


def _paced_starts(url: str, flow: str, count: int, interval: float) -> dict[str, float]:
    """Start runs one transaction each, `interval` apart; run_id -> time before the call."""
    started: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        next_at = time.perf_counter()
        for _ in range(count):
            began = time.time()
            row = conn.execute("SELECT run_id FROM flowworker.start_flow(%s, '{}')",
                               (flow,)).fetchone()
            assert row is not None
            started[str(row[0])] = began
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    return started


def _all_done(url: str, flow: str, count: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM flowworker.runs WHERE flow_slug = %s"
                           " AND status = 'completed'", (flow,)).fetchone()
    return row is not None and int(row[0]) >= count


def latency(bc: BenchCluster, logdir: Path, count: int, interval: float) -> LatencyResult:
    """An idle worker serving `ping` and `chain`; paced starts of each."""
    name, url = bc.fresh(TEMPLATE)
    stamps_file = logdir / f"fw-stamps-{name}.txt"
    workers = start_workers(url, ["ping", "chain"], 1, logdir, drain=False, stamps=stamps_file)
    proc = workers.procs[0]
    problems: list[str] = []
    try:
        # Warm up: one run through, then let the worker go idle.
        _paced_starts(url, "ping", 1, 0)
        if not wait_until(lambda: bool(_read_stamps(stamps_file)), timeout=60):
            problems.append("latency: the warm-up ping run did not start within 60 s")
        time.sleep(1.0)
        idle_rss = vm_hwm_kib(proc.pid)
        pings = _paced_starts(url, "ping", count, interval)
        if not wait_until(lambda: _all_done(url, "ping", count + 1), timeout=60, interval=0.1):
            problems.append("latency: ping runs still unfinished after 60 s")
        chains = _paced_starts(url, "chain", count, interval)
        if not wait_until(lambda: _all_done(url, "chain", count), timeout=60, interval=0.1):
            problems.append("latency: chain runs still unfinished after 60 s")
        exit_ = stop(proc)
        problems += workers.problems() + exit_problems([exit_])
        stamps = _read_stamps(stamps_file)
        start_latency = [stamps[run_id, "ping"] - t0 for run_id, t0 in pings.items()
                         if (run_id, "ping") in stamps]
        hops = _hops(url, stamps, set(chains))
        if len(start_latency) != count or len(hops) != count * (len(CHAIN_STEPS) - 1):
            problems.append(f"latency: {len(start_latency)}/{count} ping starts and "
                            f"{len(hops)}/{count * (len(CHAIN_STEPS) - 1)} hops recorded")
        ok = (len(start_latency) == count and len(hops) == count * (len(CHAIN_STEPS) - 1)
              and exit_.code == 0 and idle_rss > 0)
        return LatencyResult(start_latency, hops, idle_rss, problems, ok)
    finally:
        if proc.returncode is None:
            stop(proc)
        bc.drop_db(name)


def _hops(url: str, stamps: dict[tuple[str, str], float], runs: set[str]) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT run_id::text, step_slug,"
                            " extract(epoch FROM completed_at)::float8"
                            " FROM flowworker.step_tasks WHERE flow_slug = 'chain'"
                            " AND completed_at IS NOT NULL").fetchall()
    completed = {(str(r), str(s)): float(at) for r, s, at in rows}
    hops = []
    for run_id in runs:
        for before, after in itertools.pairwise(CHAIN_STEPS):
            if (run_id, before) in completed and (run_id, after) in stamps:
                hops.append(stamps[run_id, after] - completed[run_id, before])
    return hops


@dataclass(frozen=True)
class FunctionTime:
    """One row of pg_stat_user_functions after a drain."""

    name: str
    calls: int
    total_ms: float
    self_ms: float


@dataclass
class Profile:
    tasks: int
    seconds: float
    functions: list[FunctionTime]
    problems: list[str]


def profile(bc: BenchCluster, logdir: Path, runs: int) -> Profile:
    """One extra drain (not in the figures) in a database with track_functions = 'pl':
    where the database time of claims and acknowledgements goes."""
    name, url = bc.fresh(TEMPLATE)
    try:
        bc.admin(f"ALTER DATABASE {name} SET track_functions = 'pl'")
        start_batched(url, "bench", runs)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_reset()")
        workers = start_workers(url, ["bench"], 1, logdir, drain=True)
        exits = [reap(p, timeout=120 + runs / 200) for p in workers.procs]
        done, _, seconds = _task_window(url, "bench")
        time.sleep(1.0)  # exited backends' counters reach the shared statistics
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT funcname::text, calls, total_time, self_time"
                " FROM pg_stat_user_functions WHERE schemaname = 'flowworker' AND calls > 0"
                " ORDER BY self_time DESC").fetchall()
        functions = [FunctionTime(str(n), int(c), float(t), float(s)) for n, c, t, s in rows]
        return Profile(done, seconds, functions, workers.problems() + exit_problems(exits))
    finally:
        bc.drop_db(name)
