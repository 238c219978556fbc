"""The measurements, in one run on one cluster. Each repetition runs every
measurement once, flowworker and PgQueuer side by side, so both see the
same machine noise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import fw
from bench.pg import BenchCluster, Pgbench
from bench.pgq import PgQueuer
from bench.stats import Series, percentile


@dataclass(frozen=True)
class Params:
    quick: bool
    reps: int
    drain_sizes: tuple[int, ...]
    two_proc_jobs: int
    dag_runs: int
    latency_runs: int
    latency_interval: float
    single_starts: int
    pgbench_jobs: int
    commit_seconds: int


FULL = Params(quick=False, reps=3, drain_sizes=(20_000, 100_000), two_proc_jobs=20_000,
              dag_runs=1_000, latency_runs=200, latency_interval=0.02, single_starts=2_000,
              pgbench_jobs=300_000, commit_seconds=5)
QUICK = Params(quick=True, reps=1, drain_sizes=(5_000,), two_proc_jobs=5_000, dag_runs=200,
               latency_runs=100, latency_interval=0.02, single_starts=300,
               pgbench_jobs=100_000, commit_seconds=2)

KIB_PER_MIB = 1024


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Results:
    series: dict[str, Series] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    profile: fw.Profile | None = None

    def add(self, key: str, unit: str, value: float) -> None:
        self.series.setdefault(key, Series(unit)).add(value)

    def note(self, where: str, problems: list[str]) -> None:
        for problem in problems:
            entry = f"{where}: {problem}"
            if entry not in self.problems:
                self.problems.append(entry)


class Suite:
    def __init__(self, params: Params, bc: BenchCluster, pgq: PgQueuer, pgbench: Pgbench,
                 logdir: Path) -> None:
        self.p = params
        self.bc = bc
        self.pgq = pgq
        self.pgbench = pgbench
        self.logdir = logdir
        self.results = Results()

    def run(self) -> Results:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("pgbench ceiling", self.ceiling),
            *[(f"drain {n:,}, 1 process", self._drain_step(n)) for n in self.p.drain_sizes],
            (f"drain {self.p.two_proc_jobs:,}, 2 processes", self.two_processes),
            (f"DAG, {self.p.dag_runs:,} runs", self.dag),
            ("latency", self.latency),
            ("single enqueue", self.single_enqueue),
        ]
        for rep in range(self.p.reps):
            for name, step in steps:
                began = time.monotonic()
                step()
                say(f"  [{rep + 1}/{self.p.reps}] {name}: {time.monotonic() - began:.1f} s")
        if not self.p.quick:
            began = time.monotonic()
            runs = self.p.drain_sizes[0]
            self.results.profile = fw.profile(self.bc, self.logdir, runs)
            self.results.note("flowworker profiled drain", self.results.profile.problems)
            say(f"  function profile, drain {runs:,}: {time.monotonic() - began:.1f} s")
        return self.results

    def ceiling(self) -> None:
        r = self.results
        one = self.pgbench.claim(1, self.p.pgbench_jobs // 100)
        four = self.pgbench.claim(4, self.p.pgbench_jobs // 400)
        r.add("pgbench.claim.c1", "jobs/s", one.rows_per_second)
        r.add("pgbench.claim.c4", "jobs/s", four.rows_per_second)
        r.add("pgbench.commit", "TPS", self.pgbench.commits(self.p.commit_seconds))

    def _drain_step(self, jobs: int) -> Callable[[], None]:
        return lambda: self.drain(jobs)

    def drain(self, jobs: int) -> None:
        mine = fw.drain(self.bc, self.logdir, "bench", jobs, 1, jobs)
        theirs = self.pgq.drain(jobs, 1)
        if self.keep(f"flowworker drain {jobs}", mine):
            self.results.add(f"fw.drain.{jobs}", "tasks/s", mine.rate)
            if jobs == self.p.drain_sizes[0]:
                self.results.add("fw.enqueue.batch", "runs/s", jobs / mine.enqueue_seconds)
            if jobs == self.p.drain_sizes[-1]:
                self.results.add("fw.rss.drain", "MiB", mine.peak_rss_kib / KIB_PER_MIB)
        if self.keep(f"PgQueuer drain {jobs}", theirs):
            self.results.add(f"pgq.drain.{jobs}", "jobs/s", theirs.rate)
            if jobs == self.p.drain_sizes[0]:
                self.results.add("pgq.enqueue.batch", "jobs/s", jobs / theirs.enqueue_seconds)
            if jobs == self.p.drain_sizes[-1]:
                self.results.add("pgq.rss.drain", "MiB", theirs.peak_rss_kib / KIB_PER_MIB)

    def keep(self, where: str, result: fw.DrainResult) -> bool:
        """Record the problems; figures of a failed measurement are left out."""
        self.results.note(where, result.problems)
        if not result.ok:
            self.results.note(where, ["this repetition failed; its figures are left out"])
        return result.ok

    def two_processes(self) -> None:
        jobs = self.p.two_proc_jobs
        mine = fw.drain(self.bc, self.logdir, "bench", jobs, 2, jobs)
        theirs = self.pgq.drain(jobs, 2)
        if self.keep("flowworker 2 processes", mine):
            self.results.add("fw.drain2", "tasks/s", mine.rate)
        if self.keep("PgQueuer 2 processes", theirs):
            self.results.add("pgq.drain2", "jobs/s", theirs.rate)

    def dag(self) -> None:
        result = fw.dag_runs(self.bc, self.logdir, self.p.dag_runs)
        if self.keep("flowworker DAG", result):
            self.results.add("fw.dag", "steps/s", result.rate)

    def latency(self) -> None:
        r = self.results
        mine = fw.latency(self.bc, self.logdir, self.p.latency_runs, self.p.latency_interval)
        samples, idle_rss, problems = self.pgq.latency(self.p.latency_runs,
                                                       self.p.latency_interval)
        r.note("flowworker latency", mine.problems)
        r.note("PgQueuer latency", problems)
        if mine.ok:
            for pct in (50, 95, 99):
                r.add(f"fw.start.p{pct}", "ms", 1000 * percentile(mine.start_latency, pct))
                r.add(f"fw.hop.p{pct}", "ms", 1000 * percentile(mine.hop_latency, pct))
            r.add("fw.rss.idle", "MiB", mine.idle_rss_kib / KIB_PER_MIB)
        else:
            r.note("flowworker latency", ["this repetition failed; its figures are left out"])
        if len(samples) == self.p.latency_runs and idle_rss:
            for pct in (50, 95, 99):
                r.add(f"pgq.start.p{pct}", "ms", 1000 * percentile(samples, pct))
            r.add("pgq.rss.idle", "MiB", idle_rss / KIB_PER_MIB)
        else:
            r.note("PgQueuer latency", ["this repetition failed; its figures are left out"])

    def single_enqueue(self) -> None:
        name, url = self.bc.fresh(fw.TEMPLATE)
        try:
            seconds = fw.start_single(url, self.p.single_starts)
        finally:
            self.bc.drop_db(name)
        self.results.add("fw.enqueue.single", "runs/s", self.p.single_starts / seconds)
        self.results.add("pgq.enqueue.single", "jobs/s",
                         self.p.single_starts / self.pgq.enqueue_single(self.p.single_starts))
