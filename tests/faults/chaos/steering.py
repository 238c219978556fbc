"""Chaos (a), steering: what operators and webhooks do to runs while the
crashes go on, from side threads, through flowworker.client.

- `Pauser`: pauses two random unfinished runs among the latest of each flow
  and resumes each 1-5 s later; now and then pauses a whole flow for 2-4 s.
- `Signaller` (two of them, racing each other): signals every waiting
  `approve` step of the `chaos_wait` runs, one by run and step, the other
  by token, with {"approved": n}; one of the two applies, the other hears
  'already' (or, if it comes first, the first does).

Every call is repeated after a lost connection until it is known to have
happened; all of them are idempotent (a repeated pause, resume or signal
changes nothing), so a call whose commit was in doubt is simply sent again.
At the end `Pauser.release_all` resumes everything, whatever a crash left.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import psycopg

from flowworker.client import pause_flow, pause_run, resume_flow, resume_run, signal, signal_token
from flowworker.errors import RunStateError
from tests.faults.chaos.common import Producer

T = TypeVar("T")
RETRY_FOR = 120.0  # seconds: longer than any crash-restart
WAIT_FLOW, WAIT_STEP = "chaos_wait", "approve"


@dataclass
class SteeringCounts:
    paused: int = 0
    resumed: int = 0
    pause_refused: int = 0  # the run had ended before the pause
    ended_paused: int = 0  # its running tasks ended it while paused: nothing to resume
    flow_pauses: int = 0
    signalled: int = 0
    signalled_by_token: int = 0
    already: int = 0
    signal_refused: int = 0  # the run had ended before the signal
    reconnects: int = 0


class Session:
    """One connection of a side thread: a call is repeated on a new
    connection after the server went away, until it goes through."""

    def __init__(self, url: str, name: str, counts: SteeringCounts) -> None:
        self.url, self.name, self.counts = url, name, counts
        self.conn: psycopg.Connection | None = None

    def call(self, action: Callable[[psycopg.Connection], T]) -> T:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                if self.conn is None or self.conn.closed or self.conn.broken:
                    self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                                application_name=self.name)
                return action(self.conn)
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.counts.reconnects += 1
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # the server is away; ask again soon

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


class Pauser:
    def __init__(self, url: str, producers: Sequence[Producer], rng: random.Random,
                 counts: SteeringCounts) -> None:
        self.session = Session(url, "flowworker_chaos_pauser", counts)
        self.producers, self.rng, self.counts = producers, rng, counts
        self.held: dict[uuid.UUID, float] = {}  # run -> when to resume it
        self.flows_held: dict[str, float] = {}

    def step(self) -> None:
        now = time.monotonic()
        for run_id in [r for r, due in self.held.items() if due <= now]:
            del self.held[run_id]
            try:
                self.session.call(partial(resume_run, run_id=run_id))
                self.counts.resumed += 1
            except RunStateError:  # its last running task completed it (or failed it)
                self.counts.ended_paused += 1
        for flow in [f for f, due in self.flows_held.items() if due <= now]:
            self.session.call(partial(resume_flow, flow_slug=flow))
            del self.flows_held[flow]
        for producer in self.producers:
            latest = producer.latest(50)
            live = [r for (r,) in self.session.call(partial(_unfinished, run_ids=latest))]
            for run_id in self.rng.sample(live, k=min(2, len(live))):
                if run_id not in self.held:
                    self._pause(run_id, now + self.rng.uniform(1, 5))
        if self.rng.random() < 0.05 and not self.flows_held:
            flow = self.rng.choice([p.flow for p in self.producers])
            self.session.call(lambda c: pause_flow(c, flow))
            self.flows_held[flow] = now + self.rng.uniform(2, 4)
            self.counts.flow_pauses += 1

    def _pause(self, run_id: uuid.UUID, until: float) -> None:
        try:
            self.session.call(lambda c: pause_run(c, run_id))
        except RunStateError:  # completed (or failed) before the pause: nothing to do
            self.counts.pause_refused += 1
            return
        self.held[run_id] = until
        self.counts.paused += 1

    def release_all(self, run_ids: Sequence[uuid.UUID]) -> int:
        """Resume every flow, and every one of these runs that is paused
        (also those a pause in doubt left paused); how many runs."""
        for flow in [p.flow for p in self.producers]:
            self.session.call(partial(resume_flow, flow_slug=flow))
        self.flows_held.clear()
        paused = [r for (r,) in self.session.call(lambda c: c.execute(
            "SELECT run_id FROM flowworker.runs WHERE run_id = ANY(%s) AND status = 'paused'",
            (list(run_ids),)).fetchall())]
        for run_id in paused:
            self.session.call(partial(resume_run, run_id=run_id))
        self.counts.resumed += len(paused)
        self.held.clear()
        return len(paused)


def _unfinished(conn: psycopg.Connection, run_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID]]:
    return conn.execute("SELECT run_id FROM flowworker.runs WHERE run_id = ANY(%s)"
                        " AND status = 'started'", (run_ids,)).fetchall()


class Signaller:
    """Signals the waiting `approve` steps of the producer's chaos_wait runs."""

    def __init__(self, url: str, producer: Producer, counts: SteeringCounts, *,
                 by_token: bool) -> None:
        kind = "token" if by_token else "step"
        self.session = Session(url, f"flowworker_chaos_signal_{kind}", counts)
        self.producer, self.counts, self.by_token = producer, counts, by_token
        self.done: set[uuid.UUID] = set()

    def step(self) -> None:
        pending = [r for r in self.producer.snapshot() if r not in self.done]
        if not pending:
            return
        rows = self.session.call(lambda c: c.execute(
            "SELECT s.run_id, s.status, s.wait_token, (r.input ->> 'n')::int"
            " FROM flowworker.step_states s JOIN flowworker.runs r USING (run_id)"
            " WHERE s.run_id = ANY(%s) AND s.step_slug = %s", (pending, WAIT_STEP)).fetchall())
        for run_id, status, token, n in rows:
            if status == "waiting":
                self._signal(run_id, token, {"approved": n})
            elif status != "created":  # signalled (by the other), or the run ended
                self.done.add(run_id)

    def _signal(self, run_id: uuid.UUID, token: uuid.UUID, payload: dict[str, int]) -> None:
        answer: str
        try:
            if self.by_token:
                answer = self.session.call(lambda c: signal_token(c, token, payload))
            else:
                answer = self.session.call(lambda c: signal(c, run_id, WAIT_STEP, payload))
        except RunStateError:  # the run failed meanwhile (lost claims): the audit judges it
            self.counts.signal_refused += 1
            answer = "refused"
        if answer == "signalled":
            self.counts.signalled += 1
            self.counts.signalled_by_token += self.by_token
        elif answer == "already":
            self.counts.already += 1
        self.done.add(run_id)
