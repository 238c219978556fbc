"""RELIABILITY L5: max_connections = 30 and six workers started together.

A cluster of its own (the session's shared cluster allows 200 connections
and other tests use it): no worker may hit "too many clients", and each
holds at most its pool (3 connections, application_name `flowworker`) plus
one LISTEN connection (`flowworker-listener`). Connections are attributed
to workers by matching pg_stat_activity.client_port with the TCP sockets
each worker process holds (/proc/<pid>/fd and /proc/net/tcp), sampled
while the six drain 600 runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowworker.devdb import FAST_SETTINGS, LocalCluster
from flowworker.migrator import migrate
from tests.acceptance.harness import Database, apply_flows, check_invariants, wait_until
from tests.faults.support import (
    FAULTS_APP,
    LISTENER_APPLICATION,
    POOL_APPLICATION,
    POOL_SIZE,
    connections_by_worker,
    log_lines_since,
)
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

WORKERS = 6
RUNS = 600


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "pg", settings={"max_connections": "30", **FAST_SETTINGS})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")


def test_l5_six_workers_under_max_connections_30_stay_within_pool_plus_listener(
        small_cluster: LocalCluster, spawn: Spawn) -> None:
    url = small_cluster.url("postgres")
    migrate(url)
    apply_flows(url, FAULTS_APP)
    db = Database(url)
    try:
        assert db.scalar("SHOW max_connections") == "30"
        workers = [spawn("bare", name=f"w{i + 1}", database_url=url, wait_ready=False,
                         args=["--concurrency", "20"]) for i in range(WORKERS)]
        for worker in workers:
            worker.wait_for_event("worker.ready", timeout=60)
        run_ids = db.start_runs("bare", [{"sleep": 0.05}] * RUNS)

        most: dict[str, dict[str, int]] = {w.name: {} for w in workers}

        def sample_until_done() -> bool:
            for name, counts in connections_by_worker(db, "postgres", workers).items():
                for app, n in counts.items():
                    most[name][app] = max(most[name].get(app, 0), n)
            return db.run_statuses(run_ids)["completed"] == RUNS

        wait_until(sample_until_done, timeout=120, interval=0.1, message=lambda: (
            f"{RUNS} runs on six workers: {dict(db.run_statuses(run_ids))}\n"
            + "\n".join(w.tail(5) for w in workers)))

        for worker in workers:
            assert worker.alive(), worker.tail()
            text = worker.stderr_text()
            assert "too many clients" not in text, worker.tail()
            assert "TooManyConnections" not in text, worker.tail()
        server_log = [line for line in log_lines_since(small_cluster.log_file, 0)
                      if "too many clients" in line]
        assert not server_log, "\n".join(server_log[:5])

        for name, counts in most.items():
            assert counts.get(POOL_APPLICATION, 0) <= POOL_SIZE, (name, most)
            assert counts.get(LISTENER_APPLICATION, 0) <= 1, (name, most)
            assert sum(counts.values()) <= POOL_SIZE + 1, (name, most)
        # The measurement saw something: every worker's pool and listener.
        assert all(counts.get(POOL_APPLICATION, 0) >= 1 and counts.get(LISTENER_APPLICATION)
                   for counts in most.values()), most
        print(f"L5: most connections per worker: {most}")  # noqa: T201
        problems = check_invariants(db.conn)
        assert not problems, problems
    finally:
        db.close()
