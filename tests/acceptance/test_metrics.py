"""Issue acceptance #8: /metrics counters move; /healthz stays 200; /readyz
answers 503 while the database is unreachable and 200 again after."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from flowworker.devdb import free_port
from tests.acceptance.harness import (
    Database,
    Sample,
    has_metric,
    http_get,
    metric,
    scrape,
    set_connections_allowed,
    wait_until,
)
from tests.support.database import PgServer
from tests.support.worker_fixtures import Spawn

pytestmark = pytest.mark.acceptance

NAMES = [
    "flowworker_tasks_started_total",
    "flowworker_tasks_completed_total",
    "flowworker_tasks_failed_total",
    "flowworker_task_duration_seconds_count",
    "flowworker_tasks_in_flight",
    "flowworker_queue_depth",
    "flowworker_listener_up",
]
# What flowworker_db_reconnects_total counts, as logged.
RECONNECT_EVENTS = ("db.reconnecting", "worker.heartbeat_missed", "listener.lost")


def status(url: str) -> int:
    return http_get(url, timeout=3)[0]


class Outage:
    """The database becomes unreachable for the worker, then comes back."""

    def __init__(self, kind: str, pg_server: PgServer, dbname: str) -> None:
        if kind == "server-stopped" and pg_server.cluster is None:
            pytest.skip("the database server is not ours to stop")
        self.kind = kind
        self.pg_server = pg_server
        self.dbname = dbname

    def begin(self) -> None:
        if self.kind == "server-stopped":
            assert self.pg_server.cluster is not None
            self.pg_server.cluster.stop("fast")
        else:
            set_connections_allowed(self.pg_server.admin_url, self.dbname, allowed=False)

    def end(self) -> None:
        if self.kind == "server-stopped":
            assert self.pg_server.cluster is not None
            self.pg_server.cluster.start()
        else:
            set_connections_allowed(self.pg_server.admin_url, self.dbname, allowed=True)


@pytest.mark.parametrize("kind", [
    # pg_ctl stop -m fast: connections refused while it is down.
    "server-stopped",
    # ALTER DATABASE ... ALLOW_CONNECTIONS false and its sessions terminated:
    # connecting fails with SQLSTATE 55000 instead (works on any server).
    "database-closed",
])
def test_metrics_move_and_readyz_follows_the_database(
        kind: str, db: Database, spawn: Spawn, pg_server: PgServer, dbname: str) -> None:
    outage = Outage(kind, pg_server, dbname)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # One flow only: several flows in one worker are test_one_worker_runs_several_flows.
    worker = spawn("flaky", args=["--metrics-addr", f"127.0.0.1:{port}"])
    assert status(base + "/healthz") == 200
    wait_until(lambda: status(base + "/readyz") == 200, timeout=10, message="/readyz 200")
    before = scrape(base)

    flaky = db.start_runs("flaky", [{}] * 10)  # each fails once (outcome retry), then completes
    assert db.wait_runs(flaky, timeout=30, workers=[worker]) == {"completed": len(flaky)}
    tasks = len(flaky)

    def delta(samples: list[Sample], name: str, **labels: str) -> float:
        return metric(samples, name, **labels) - metric(before, name, **labels)

    def settled() -> list[Sample] | None:
        samples = scrape(base)
        done = delta(samples, "flowworker_tasks_completed_total") >= tasks
        return samples if done and metric(samples, "flowworker_tasks_in_flight") == 0 else None

    after = wait_until(settled, timeout=10, message="the counters to catch up")
    missing = [name for name in NAMES if not has_metric(after, name)]
    assert not missing, f"metrics missing from /metrics: {missing}"
    assert delta(after, "flowworker_tasks_completed_total") == tasks
    assert delta(after, "flowworker_tasks_failed_total", outcome="retry") == len(flaky)
    assert delta(after, "flowworker_tasks_failed_total") == len(flaky)
    assert delta(after, "flowworker_tasks_started_total") == tasks + len(flaky)
    assert delta(after, "flowworker_task_duration_seconds_count") >= tasks
    assert metric(after, "flowworker_queue_depth") == 0
    assert metric(after, "flowworker_listener_up") == 1
    assert not any("run_id" in labels for _, labels, _ in after), "run_id must not be a label"

    def alive(what: Callable[[], object]) -> Callable[[], object]:
        def check() -> object:
            try:
                return what()
            except AssertionError:
                with contextlib.suppress(AssertionError):
                    worker.wait_exit(timeout=5)  # did it just die?
                if worker.alive():
                    raise
                raise AssertionError(f"the worker exited during the {kind} outage\n"
                                     + worker.tail()) from None
        return check

    outage.begin()
    try:
        wait_until(alive(lambda: status(base + "/readyz") == 503), timeout=15,
                   message=lambda: "/readyz 503 while the database is unreachable\n"
                   + worker.tail())
        assert status(base + "/healthz") == 200
        wait_until(alive(lambda: metric(scrape(base), "flowworker_listener_up") == 0),
                   timeout=10, message="flowworker_listener_up 0")
    finally:
        outage.end()
    wait_until(alive(lambda: status(base + "/readyz") == 200), timeout=20,
               message=lambda: "/readyz 200 once the database is back\n" + worker.tail())
    assert metric(scrape(base), "flowworker_listener_up") == 1
    assert worker.alive()

    # Every reconnect the worker logged is counted, whichever part it was.
    def reconnects_logged() -> int:
        return sum(len(worker.find(name)) for name in RECONNECT_EVENTS)

    wait_until(lambda: metric(scrape(base), "flowworker_db_reconnects_total")
               == reconnects_logged() > 0, timeout=10, message=lambda: (
                   f"flowworker_db_reconnects_total "
                   f"{metric(scrape(base), 'flowworker_db_reconnects_total')} to equal the "
                   f"{reconnects_logged()} reconnects logged"))
    again = db.start_runs("flaky", [{}])
    assert db.wait_runs(again, timeout=15, workers=[worker]) == {"completed": 1}
