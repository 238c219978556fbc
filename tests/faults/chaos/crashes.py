"""Chaos (a): Postgres crash-restarts and kill -9 of workers under steady load.

For CHAOS_MINUTES (default 20): a producer starts runs of the `chaos` flow
continuously; every 20-60 s (at random) the dedicated cluster is crashed
(`pg_ctl stop -m immediate`) and started again; every CHAOS_KILL_LOW to
CHAOS_KILL_HIGH seconds (default 10-30) a random worker gets kill -9 and the
supervisor starts a new one. Then the load stops, the workers drain, and the
audit runs:

- lost: runs whose start committed but which are missing or not terminal;
- double-applied: a task completed twice in the workers' logs, a claim
  (task, attempt) executed twice in the ledger, or step/run counters that
  disagree with the task rows (I2/I4);
- wrong output: a completed run whose output is not the expected one;
- failed: runs failed legitimately (a task lost its worker max_attempts
  times) are counted, not hidden; any other failure is a defect;
- I1-I6 (tests/acceptance/harness.py check_invariants).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.acceptance.harness import Database, check_invariants, check_worker_logs
from tests.faults.chaos.common import (
    ChaosCluster,
    Every,
    Exit,
    Producer,
    WorkerPool,
    env_number,
    say,
)
from tests.faults.chaos.flows import chaos_expected

DRAIN_SECONDS = 600.0


@dataclass
class CrashReport:
    minutes: float
    rate: float
    workers: int
    restarts: list[float] = field(default_factory=list)  # seconds away, per crash-restart
    kills: list[str] = field(default_factory=list)
    started: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    non_terminal: list[str] = field(default_factory=list)
    double_applied: list[str] = field(default_factory=list)
    wrong_output: list[str] = field(default_factory=list)
    illegitimate_failures: list[str] = field(default_factory=list)
    legitimate_failures: list[str] = field(default_factory=list)
    invariants: list[str] = field(default_factory=list)
    unexpected_exits: list[Exit] = field(default_factory=list)
    loop_errors: list[str] = field(default_factory=list)
    executions: int = 0
    tasks: int = 0
    repeated_executions: int = 0
    drain_seconds: float = 0.0
    producer_retries: int = 0
    log_dir: str = ""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.non_terminal or self.double_applied or self.wrong_output
                    or self.illegitimate_failures or self.invariants)


def run(cluster: ChaosCluster, minutes: float) -> CrashReport:
    rng = random.Random()
    rate = env_number("CHAOS_RATE", 10.0)
    size = int(env_number("CHAOS_WORKERS", 3))
    report = CrashReport(minutes=minutes, rate=rate, workers=size)
    url = cluster.create_database("chaos")
    log_dir = cluster.base / "crash-workers"
    report.log_dir = str(log_dir)
    say(f"chaos (a): {minutes:g} min of crash-restarts every 20-60 s and kill -9 of "
        f"{size} workers, {rate:g} runs/s; worker logs in {log_dir}")

    pool = WorkerPool(url, size, log_dir).start()
    producer = Producer(url, rate).start()

    def crash() -> None:
        away = cluster.crash_restart()
        report.restarts.append(away)
        say(f"  [{elapsed():6.0f} s] postgres crash-restart #{len(report.restarts)} "
            f"(away {away:.1f} s)")

    def kill() -> None:
        name = pool.kill_random(rng)
        if name is not None:
            report.kills.append(name)

    began = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - began

    crasher = Every("chaos-crasher", 20, 60, crash, rng).start()
    killer = Every("chaos-killer", env_number("CHAOS_KILL_LOW", 10),
                   env_number("CHAOS_KILL_HIGH", 30), kill, rng).start()
    db = Database(url)
    try:
        end = began + minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))  # progress lines
            terminal = _terminal(db, producer.snapshot())
            say(f"  [{elapsed():6.0f} s] started {producer.count()} runs, "
                f"{terminal if terminal >= 0 else '? (server away)'} terminal, "
                f"{len(report.restarts)} crash-restarts, {len(report.kills)} kills")
        crasher.stop()
        killer.stop()
        producer.stop()
        say(f"  [{elapsed():6.0f} s] load stopped; draining")
        drain_began = time.monotonic()
        started = producer.snapshot()
        while time.monotonic() - drain_began < DRAIN_SECONDS:
            if _terminal(db, started) == len(started):
                break
            time.sleep(1.0)
        report.drain_seconds = time.monotonic() - drain_began
        pool.stop()
        _audit(report, db, started, pool)
    finally:
        crasher.stop()
        killer.stop()
        producer.stop()
        pool.stop()
        db.close()
    report.producer_retries = producer.failures
    report.unexpected_exits = pool.unexpected
    report.loop_errors = crasher.errors + killer.errors
    return report


def _terminal(db: Database, started: dict[uuid.UUID, int]) -> int:
    try:
        return int(db.scalar("SELECT count(*) FROM flowworker.runs WHERE run_id = ANY(%s)"
                             " AND status <> 'started'", (list(started),)))
    except Exception:  # the server is restarting: not a number this time
        return -1


def _audit(report: CrashReport, db: Database, started: dict[uuid.UUID, int],
           pool: WorkerPool) -> None:
    report.started = len(started)
    rows: dict[uuid.UUID, tuple[str, Any]] = {
        run_id: (status, output) for run_id, status, output in db.query(
            "SELECT run_id, status, output FROM flowworker.runs WHERE run_id = ANY(%s)",
            (list(started),))}
    report.statuses = Counter(status for status, _ in rows.values())
    report.lost = [str(r) for r in started if r not in rows][:20]
    report.non_terminal = [str(r) for r, (s, _) in rows.items() if s == "started"][:20]
    report.wrong_output = [str(r) for r, (s, out) in rows.items()
                           if s == "completed" and out != chaos_expected(started[r])][:20]
    for run_id, step, index, attempts, error in db.query(
            "SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count, t.error_message"
            " FROM flowworker.step_tasks t JOIN flowworker.runs r USING (run_id)"
            " WHERE r.status = 'failed' AND t.status = 'failed' AND r.run_id = ANY(%s)",
            (list(started),)):
        line = f"{run_id} {step}[{index}] after {attempts} attempts: {error}"
        if error and "claim expired" in error:
            report.legitimate_failures.append(line)
        else:
            report.illegitimate_failures.append(line)
    report.illegitimate_failures += [
        f"{r} failed with no failed task" for r, (s, _) in rows.items() if s == "failed"
        and not any(line.startswith(str(r)) for line in report.legitimate_failures
                    + report.illegitimate_failures)]
    # One claim, one execution; and one applied completion per task.
    twice = db.query("SELECT run_id, step_slug, task_index, attempt, count(*) FROM public.ledger"
                     " WHERE note IS NULL GROUP BY 1, 2, 3, 4 HAVING count(*) > 1")
    report.double_applied += [f"claim executed {n} times: {r} {s}[{i}] attempt {a}"
                              for r, s, i, a, n in twice[:20]]
    report.double_applied += check_worker_logs(pool.all)
    report.invariants = check_invariants(db.conn)
    report.double_applied += [p for p in report.invariants if p.startswith(("I2", "I4"))]
    report.executions = int(db.scalar("SELECT count(*) FROM public.ledger WHERE note IS NULL"))
    report.tasks = int(db.scalar("SELECT count(*) FROM flowworker.step_tasks"))
    report.repeated_executions = report.executions - int(db.scalar(
        "SELECT count(*) FROM (SELECT DISTINCT run_id, step_slug, task_index"
        " FROM public.ledger WHERE note IS NULL) d"))


def summary(report: CrashReport) -> list[str]:
    away = sorted(report.restarts)
    lines = [
        f"- duration: {report.minutes:g} min of load at {report.rate:g} runs/s, "
        f"{report.workers} workers (`chaos` flow: 4-7 tasks per run, one map step)",
        f"- Postgres crash-restarts survived: {len(report.restarts)}"
        + (f" (server away {away[0]:.1f}-{away[-1]:.1f} s each)" if away else ""),
        f"- workers killed with kill -9: {len(report.kills)}; unexpected worker exits: "
        f"{len(report.unexpected_exits)}",
        f"- runs started: {report.started}; processed (terminal): "
        f"{sum(report.statuses[s] for s in ('completed', 'failed', 'cancelled'))} "
        f"(completed {report.statuses['completed']}, failed {report.statuses['failed']})",
        f"- drained in {report.drain_seconds:.0f} s after the load stopped",
        f"- lost: {len(report.lost) + len(report.non_terminal)} "
        f"(missing {len(report.lost)}, non-terminal {len(report.non_terminal)})",
        f"- double-applied: {len(report.double_applied)}",
        f"- wrong outputs: {len(report.wrong_output)}",
        f"- failed legitimately (a task's worker lost max_attempts times): "
        f"{len(report.legitimate_failures)}; other failures: "
        f"{len(report.illegitimate_failures)}",
        f"- handler executions: {report.executions} for {report.tasks} tasks "
        f"({report.repeated_executions} re-executions after a lost claim: at-least-once)",
        f"- invariant violations (I1-I6): {len(report.invariants)}",
        f"- producer retries of a batch while the server was away: {report.producer_retries}",
    ]
    for title, items in (("lost", report.lost + report.non_terminal),
                         ("double-applied", report.double_applied),
                         ("wrong output", report.wrong_output),
                         ("other failures", report.illegitimate_failures),
                         ("invariants", report.invariants),
                         ("chaos loop errors", report.loop_errors)):
        lines += [f"  - {title}: {item}" for item in items[:10]]
    codes = Counter(str(e.code) for e in report.unexpected_exits)
    if codes:
        lines.append(f"- unexpected exit codes: {dict(codes)}")
        for exit_ in report.unexpected_exits[:3]:
            last = exit_.tail.splitlines()[-3:]
            lines += [f"  - {exit_.name} exited {exit_.code}: " + " | ".join(last)[:600]]
    return lines
