"""Chaos (b): a churn soak while a long transaction elsewhere in the database
holds back vacuum (`BEGIN; SELECT txid_current();` left open the whole time).

For CHAOS_SOAK_MINUTES (default 30): a producer starts runs of the `chaos`
flow at CHAOS_SOAK_RATE runs/s (default 10) and two workers run them. Every
minute one row: runs started and completed, claim latency (execution time of
`flowworker.start_tasks` from pg_stat_statements, reset every minute), dead
and live tuples of the queue table (pg_stat_user_tables for
flowworker.q_chaos), its size, and how often autovacuum ran on it. At the
end the long transaction is closed, the queue is vacuumed, and a last row
shows what vacuum could then remove.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import psycopg

from tests.faults.chaos.common import ChaosCluster, Producer, WorkerPool, env_number, say

QUEUE = "q_chaos"
CLAIM_QUERY = "%flowworker.start_tasks(%"
DRAIN_SECONDS = 300.0


@dataclass
class Sample:
    minute: str
    started: int
    completed: int
    claims: int
    claim_mean_ms: float
    claim_max_ms: float
    dead: int
    live: int
    queue_kb: int
    autovacuums: int
    backlog: int

    def row(self) -> str:
        return (f"| {self.minute} | {self.started} | {self.completed} | {self.backlog} "
                f"| {self.claims} | {self.claim_mean_ms:.2f} | {self.claim_max_ms:.1f} "
                f"| {self.dead} | {self.live} | {self.queue_kb} | {self.autovacuums} |")


HEADER = ("| minute | runs started | runs completed | runs unfinished | claims "
          "| claim mean ms | claim max ms | queue dead tuples | queue live tuples "
          "| queue size kB | autovacuums |")
RULE = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


@dataclass
class SoakReport:
    minutes: float
    rate: float
    samples: list[Sample] = field(default_factory=list)
    held_xid: int = 0
    after_vacuum: Sample | None = None
    unexpected_exits: int = 0
    unfinished: int = 0

    def table(self) -> list[str]:
        rows = [s.row() for s in self.samples]
        if self.after_vacuum is not None:
            rows.append(self.after_vacuum.row())
        return [HEADER, RULE, *rows]


class Probe:
    """Per-minute figures from the soak database."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True,
                                    application_name="flowworker_chaos_probe")
        self.completed_before = 0
        self.started_before = 0

    def reset_claims(self) -> None:
        self.conn.execute(
            "SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements"
            " WHERE query LIKE %s", (CLAIM_QUERY,))

    def sample(self, minute: str, started: dict[uuid.UUID, int]) -> Sample:
        self.conn.execute("SELECT pg_stat_force_next_flush()")
        row = self.conn.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time)"
            " / nullif(sum(calls), 0), 0), coalesce(max(max_exec_time), 0)"
            " FROM pg_stat_statements WHERE query LIKE %s", (CLAIM_QUERY,)).fetchone()
        assert row is not None
        claims, mean_ms, max_ms = int(row[0]), float(row[1]), float(row[2])
        self.reset_claims()
        stats = self.conn.execute(
            "SELECT n_dead_tup, n_live_tup, autovacuum_count,"
            " pg_total_relation_size(relid) / 1024 FROM pg_stat_user_tables"
            " WHERE schemaname = 'flowworker' AND relname = %s", (QUEUE,)).fetchone()
        assert stats is not None
        ids = list(started)
        counts = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'),"
            " count(*) FILTER (WHERE status = 'started') FROM flowworker.runs"
            " WHERE run_id = ANY(%s)", (ids,)).fetchone()
        assert counts is not None
        completed = int(counts[0])
        sample = Sample(minute, len(ids) - self.started_before, completed - self.completed_before,
                        claims, mean_ms, max_ms, int(stats[0]), int(stats[1]), int(stats[3]),
                        int(stats[2]), int(counts[1]))
        self.started_before, self.completed_before = len(ids), completed
        return sample

    def close(self) -> None:
        self.conn.close()


def run(cluster: ChaosCluster, minutes: float) -> SoakReport:
    rate = env_number("CHAOS_SOAK_RATE", 10.0)
    report = SoakReport(minutes=minutes, rate=rate)
    url = cluster.create_database("soak")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    say(f"chaos (b): {minutes:g} min soak at {rate:g} runs/s with a transaction held open")

    holdout = psycopg.connect(url, application_name="flowworker_chaos_holdout")
    report.held_xid = int(holdout.execute("SELECT txid_current()").fetchone()[0])  # type: ignore[index]
    probe = Probe(url)
    probe.reset_claims()
    pool = WorkerPool(url, 2, cluster.base / "soak-workers").start()
    producer = Producer(url, rate).start()
    try:
        say(HEADER)
        say(RULE)
        began = time.monotonic()
        for minute in range(1, int(minutes) + 1):
            time.sleep(max(0.0, began + minute * 60 - time.monotonic()))
            sample = probe.sample(str(minute), producer.snapshot())
            report.samples.append(sample)
            say(sample.row())
        producer.stop()
        started = producer.snapshot()
        drain_began = time.monotonic()
        while time.monotonic() - drain_began < DRAIN_SECONDS:
            left = probe.conn.execute("SELECT count(*) FROM flowworker.runs WHERE run_id = ANY(%s)"
                                      " AND status = 'started'", (list(started),)).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(1.0)
        holdout.rollback()  # the long transaction ends: vacuum may now remove dead tuples
        holdout.close()
        probe.conn.execute(f"VACUUM flowworker.{QUEUE}".encode())
        report.after_vacuum = probe.sample("after VACUUM", started)
        say(report.after_vacuum.row())
        report.unfinished = report.after_vacuum.backlog
    finally:
        producer.stop()
        pool.stop()
        if not holdout.closed:
            holdout.close()
        probe.close()
    report.unexpected_exits = len(pool.unexpected)
    return report


def summary(report: SoakReport) -> list[str]:
    if not report.samples:
        return ["- no full minute was sampled"]
    first, last = report.samples[0], report.samples[-1]
    peak = max(report.samples, key=lambda s: s.dead)
    lines = [
        f"- duration: {report.minutes:g} min at {report.rate:g} runs/s, 2 workers; "
        f"transaction {report.held_xid} held open the whole time",
        f"- claim latency (start_tasks, server side): mean {first.claim_mean_ms:.2f} ms in "
        f"minute 1, {last.claim_mean_ms:.2f} ms in minute {last.minute}; "
        f"worst single claim {max(s.claim_max_ms for s in report.samples):.1f} ms",
        f"- queue dead tuples: {first.dead} after minute 1, peak {peak.dead} "
        f"(minute {peak.minute}); queue size {first.queue_kb} kB -> {last.queue_kb} kB",
        f"- runs unfinished at the end: {report.unfinished}; unexpected worker exits: "
        f"{report.unexpected_exits}",
    ]
    if report.after_vacuum is not None:
        lines.append(f"- after the long transaction ended, VACUUM left "
                     f"{report.after_vacuum.dead} dead tuples in the queue")
    return lines
