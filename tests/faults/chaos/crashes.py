"""Chaos (a): Postgres crash-restarts and kill -9 of workers under steady load.

For CHAOS_MINUTES (default 20): producers start runs of the `chaos` flow
and, at a third of the rate, of `chaos_wait` (a wait step) continuously;
every 20-60 s (at random) the dedicated cluster is crashed
(`pg_ctl stop -m immediate`) and started again; every CHAOS_KILL_LOW to
CHAOS_KILL_HIGH seconds (default 10-30) a random worker gets kill -9 and the
supervisor starts a new one. Meanwhile side threads steer the runs
(steering.py): random runs are paused and resumed 1-5 s later, now and then
a whole flow for 2-4 s, and two signallers race to signal every wait. Then
the load stops, everything paused is resumed, the workers drain, and the
audit runs:

- lost: runs whose start committed but which are missing or not terminal
  (a paused run is not terminal);
- double-applied: a task completed twice in the workers' logs, a claim
  (task, attempt) executed twice in the ledger, or step/run counters that
  disagree with the task rows (I2/I4);
- wrong output: a completed run whose output is not the expected one (for
  `chaos_wait`, the signal's payload went through);
- signals: a wait signalled more than once (two `step.signalled` events);
- steering errors: any error a pause, resume or signal raised other than the
  refusals it expects (a run that ended first), after reconnecting;
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
    FLOW,
    ChaosCluster,
    Every,
    Exit,
    Producer,
    WorkerPool,
    env_number,
    say,
)
from tests.faults.chaos.flows import chaos_expected, chaos_wait_expected
from tests.faults.chaos.steering import (
    WAIT_FLOW,
    Pauser,
    Signaller,
    SteeringCounts,
)

DRAIN_SECONDS = 600.0
WAIT_SHARE = 1 / 3  # chaos_wait runs per chaos run
TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class CrashReport:
    minutes: float
    rate: float
    workers: int
    restarts: list[float] = field(default_factory=list)  # seconds away, per crash-restart
    kills: list[str] = field(default_factory=list)
    started: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    waits_started: int = 0
    steering: SteeringCounts = field(default_factory=SteeringCounts)
    runs_paused: int = 0  # distinct runs paused at least once (run.paused events)
    signalled_twice: list[str] = field(default_factory=list)
    left_paused: int = 0  # runs still paused when the load stopped, resumed then
    # An error a steering call raised (a refusal it expects is counted, not raised).
    steering_errors: list[str] = field(default_factory=list)
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
                    or self.illegitimate_failures or self.invariants or self.signalled_twice
                    or self.steering_errors)


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

    pool = WorkerPool(url, size, log_dir, flows=(FLOW, WAIT_FLOW)).start()
    producer = Producer(url, rate).start()
    waiter = Producer(url, rate * WAIT_SHARE, flow=WAIT_FLOW).start()
    counts = report.steering
    pauser = Pauser(url, [producer, waiter], rng, counts)
    signallers = [Signaller(url, waiter, counts, by_token=by_token)
                  for by_token in (False, True)]

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
    steerer = Every("chaos-pauser", 0.5, 1.5, pauser.step, rng).start()
    signalling = [Every(f"chaos-signaller-{i}", 0.2, 0.6, s.step, rng).start()
                  for i, s in enumerate(signallers)]
    db = Database(url)
    try:
        end = began + minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))  # progress lines
            terminal = _terminal(db, [*producer.snapshot(), *waiter.snapshot()])
            say(f"  [{elapsed():6.0f} s] started {producer.count() + waiter.count()} runs, "
                f"{terminal if terminal >= 0 else '? (server away)'} terminal, "
                f"{len(report.restarts)} crash-restarts, {len(report.kills)} kills, "
                f"{counts.paused} pauses, {counts.signalled} signals")
        crasher.stop()
        killer.stop()
        producer.stop()
        waiter.stop()
        steerer.stop()
        expected = {r: chaos_expected(n) for r, n in producer.snapshot().items()}
        expected |= {r: chaos_wait_expected(n) for r, n in waiter.snapshot().items()}
        report.left_paused = pauser.release_all(list(expected))
        say(f"  [{elapsed():6.0f} s] load stopped, {report.left_paused} paused runs resumed; "
            "draining (the signallers go on)")
        drain_began = time.monotonic()
        while time.monotonic() - drain_began < DRAIN_SECONDS:
            if _terminal(db, list(expected)) == len(expected):
                break
            time.sleep(1.0)
        report.drain_seconds = time.monotonic() - drain_began
        for every in signalling:
            every.stop()
        pool.stop()
        report.waits_started = waiter.count()
        _audit(report, db, expected, pool)
    finally:
        for every in (crasher, killer, steerer, *signalling):
            every.stop()
        producer.stop()
        waiter.stop()
        pool.stop()
        db.close()
    report.producer_retries = producer.failures + waiter.failures
    report.unexpected_exits = pool.unexpected
    report.loop_errors = crasher.errors + killer.errors
    report.steering_errors = steerer.errors + [e for every in signalling for e in every.errors]
    return report


def _terminal(db: Database, run_ids: list[uuid.UUID]) -> int:
    try:
        return int(db.scalar("SELECT count(*) FROM flowworker.runs WHERE run_id = ANY(%s)"
                             " AND status = ANY(%s)", (run_ids, list(TERMINAL))))
    except Exception:  # the server is restarting: not a number this time
        return -1


def _audit(report: CrashReport, db: Database, expected: dict[uuid.UUID, Any],
           pool: WorkerPool) -> None:
    started = list(expected)
    report.started = len(started)
    rows: dict[uuid.UUID, tuple[str, Any]] = {
        run_id: (status, output) for run_id, status, output in db.query(
            "SELECT run_id, status, output FROM flowworker.runs WHERE run_id = ANY(%s)",
            (started,))}
    report.statuses = Counter(status for status, _ in rows.values())
    report.lost = [str(r) for r in started if r not in rows][:20]
    report.non_terminal = [f"{r} {s}" for r, (s, _) in rows.items() if s not in TERMINAL][:20]
    report.wrong_output = [str(r) for r, (s, out) in rows.items()
                           if s == "completed" and out != expected[r]][:20]
    for run_id, step, index, attempts, error in db.query(
            "SELECT t.run_id, t.step_slug, t.task_index, t.attempts_count, t.error_message"
            " FROM flowworker.step_tasks t JOIN flowworker.runs r USING (run_id)"
            " WHERE r.status = 'failed' AND t.status = 'failed' AND r.run_id = ANY(%s)",
            (started,)):
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
    report.signalled_twice = [f"{r} signalled {n} times" for r, n in db.query(
        "SELECT run_id, count(*) FROM flowworker.events WHERE event = 'step.signalled'"
        " AND run_id = ANY(%s) GROUP BY run_id HAVING count(*) > 1", (started,))][:20]
    report.runs_paused = int(db.scalar(
        "SELECT count(DISTINCT run_id) FROM flowworker.events WHERE event = 'run.paused'"
        " AND run_id = ANY(%s)", (started,)))
    report.invariants = check_invariants(db.conn)
    report.double_applied += [p for p in report.invariants if p.startswith(("I2", "I4"))]
    report.executions = int(db.scalar("SELECT count(*) FROM public.ledger WHERE note IS NULL"))
    report.tasks = int(db.scalar(  # a wait step's task is its deadline, not work
        "SELECT count(*) FROM flowworker.step_tasks t JOIN flowworker.steps s"
        " USING (flow_slug, step_slug) WHERE s.step_type <> 'wait'"))
    report.repeated_executions = report.executions - int(db.scalar(
        "SELECT count(*) FROM (SELECT DISTINCT run_id, step_slug, task_index"
        " FROM public.ledger WHERE note IS NULL) d"))


def summary(report: CrashReport) -> list[str]:
    away = sorted(report.restarts)
    s = report.steering
    lines = [
        f"- duration: {report.minutes:g} min of load at {report.rate:g} runs/s of `chaos` "
        f"(4-7 tasks per run, one map step) and {report.rate * WAIT_SHARE:.3g} runs/s of "
        f"`chaos_wait` (2 tasks and a wait step), {report.workers} workers",
        f"- Postgres crash-restarts survived: {len(report.restarts)}"
        + (f" (server away {away[0]:.1f}-{away[-1]:.1f} s each)" if away else ""),
        f"- workers killed with kill -9: {len(report.kills)}; unexpected worker exits: "
        f"{len(report.unexpected_exits)}",
        f"- runs started: {report.started}; processed (terminal): "
        f"{sum(report.statuses[s] for s in ('completed', 'failed', 'cancelled'))} "
        f"(completed {report.statuses['completed']}, failed {report.statuses['failed']})",
        f"- steering: {s.paused} pause_run ({report.runs_paused} runs paused at least once; "
        f"{s.pause_refused} refused, the run already over), {s.resumed} resume_run "
        f"({report.left_paused} of them at the end; {s.ended_paused} runs were ended by their "
        f"running tasks while paused), {s.flow_pauses} pause_flow of 2-4 s; "
        f"{report.waits_started} waits signalled by two racing signallers: {s.signalled} "
        f"applied ({s.signalled_by_token} by token), {s.already} answered 'already', "
        f"{s.signal_refused} refused (the run over); "
        f"{s.reconnects} steering calls repeated after a lost connection",
        f"- waits signalled more than once: {len(report.signalled_twice)}; errors raised to "
        f"a steering call: {len(report.steering_errors)}",
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
                         ("signalled twice", report.signalled_twice),
                         ("steering errors", report.steering_errors),
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
