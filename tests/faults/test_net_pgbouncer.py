
"""RELIABILITY D8: the worker behind PgBouncer in transaction pooling mode.

PgBouncer (Debian package `pgbouncer`, installed by scripts/install-test-deps.sh,
which `make test` runs) is started by the test on a free port in front of
the test cluster, with auth_type=trust and pool_mode=transaction. In that
mode a LISTEN lands on whichever server connection the transaction got, and
that connection goes back to the pool: notifications never reach the worker,
and prepared statements do not survive from one transaction to the next.

Pass:
- with FLOWWORKER_STATEMENT_CACHE_SIZE=0 the worker finds out that NOTIFY
  cannot reach it (`listener.unavailable`), polls instead, and completes
  runs, with no prepared-statement error in its log;
- with FLOWWORKER_LISTEN_UNAVAILABLE=refuse it exits 2 with one clear line
  on stderr.
Missing pgbouncer fails the test with the command that installs it: these
rows must not silently skip in CI.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flowworker.devdb import free_port
from tests.acceptance.harness import Database, Ledger, WorkerProcess, as_url, wait_until
from tests.apps.flows import diamond_expected
from tests.support.database import PgServer
from tests.support.worker_fixtures import (  # noqa: F401 - default_app used by name:
    Spawn,  # these workers run the acceptance app, not the faults conftest's
    default_app,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

INSTALL_HINT = "run scripts/install-test-deps.sh as root (make test does)"
RUNS = 20
# Unprivileged user to run pgbouncer as when we are root (it refuses root):
# the embedded cluster's user, else nobody.
PGBOUNCER_USERS = ("embedded_postgres", "nobody")


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(f"pgbouncer is not installed; {INSTALL_HINT}", pytrace=False)
    return found


def unprivileged_user() -> str:
    for name in PGBOUNCER_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.fail(f"no unprivileged user to run pgbouncer as (tried {PGBOUNCER_USERS})",
                pytrace=False)


class PgBouncer:
    """One pgbouncer process in transaction pooling mode, in front of host:port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.binary = pgbouncer_binary()
        self.port = free_port()
        self.user = unprivileged_user() if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="flowworker-pgbouncer-"))
        self.log_file = self.dir / "pgbouncer.log"
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={target_host} port={target_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = {self.log_file}
admin_users = postgres
""")
        if self.user is not None:
            shutil.chown(self.dir, self.user)
            for path in self.dir.iterdir():
                shutil.chown(path, self.user)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        self.proc = subprocess.Popen(
            [self.binary, str(self.dir / "pgbouncer.ini")], user=self.user,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._answers, timeout=15, interval=0.1,
                   message=lambda: "pgbouncer to accept connections\n" + self.log())
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"pgbouncer exited with {self.proc.returncode}: {stderr}"
                                 f"\n{self.log()}")
        try:
            with psycopg.connect(self.url("postgresql://postgres@127.0.0.1/postgres"),
                                 connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def url(self, conninfo: str) -> str:
        """conninfo with host and port pointed at pgbouncer."""
        params = conninfo_to_dict(conninfo)
        params.update(host="127.0.0.1", port=str(self.port))
        return as_url(make_conninfo("", **params))

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_file.read_text()
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    target = conninfo_to_dict(pg_server.admin_url)
    bouncer = PgBouncer(str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432))
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()


def through(bouncer: PgBouncer, db_url: str, **settings: str) -> dict[str, str]:
    """Worker environment: its database through pgbouncer, the ledger direct."""
    env = {"FLOWWORKER_DATABASE_URL": as_url(db_url)}
    env.update({f"FLOWWORKER_{name.upper()}": value for name, value in settings.items()})
    return env


def test_worker_behind_pgbouncer_falls_back_to_polling(
        db: Database, ledger: Ledger, spawn: Spawn, db_url: str,
        pgbouncer: PgBouncer) -> None:
    worker = spawn("diamond", database_url=pgbouncer.url(db_url),
                   env=through(pgbouncer, db_url, statement_cache_size="0"))
    unavailable = worker.find("listener.unavailable")
    assert unavailable, "the worker did not notice that NOTIFY cannot reach it\n" + worker.tail()
    assert unavailable[0].get("fallback") == "poll"
    assert not worker.find("listener.connected"), "it claims a working LISTEN through pgbouncer"

    run_ids = db.start_runs("diamond", [{"n": n} for n in range(RUNS)])
    began = time.monotonic()
    assert db.wait_runs(run_ids, timeout=60, workers=[worker]) == {"completed": RUNS}
    took = time.monotonic() - began
    outputs = db.run_outputs(run_ids)
    assert all(outputs[run_id] == diamond_expected(n) for n, run_id in enumerate(run_ids))
    assert set(ledger.executions_per_task(run_ids).values()) == {1}

    log = worker.stderr_text().lower()
    assert "prepared statement" not in log, worker.tail()
    assert "does not exist" not in log, worker.tail()
    assert not worker.find("worker.crashed")
    assert not worker.find("db.reconnecting"), (
        "database calls failed through pgbouncer\n" + worker.tail())
    assert worker.alive()
    print(f"\nD8: {RUNS} diamond runs through pgbouncer (polling) in {took:.1f} s")  # noqa: T201


def test_worker_behind_pgbouncer_refuses_when_told(
        db: Database, spawn: Spawn, db_url: str, pgbouncer: PgBouncer) -> None:
    worker: WorkerProcess = spawn(
        "diamond", database_url=pgbouncer.url(db_url), wait_ready=False,
        env=through(pgbouncer, db_url, statement_cache_size="0", listen_unavailable="refuse"))
    code = worker.wait_exit(timeout=30)
    text = worker.stderr_text()
    assert code == 2, text
    assert "Traceback" not in text, text
    # Everything else on stderr is the JSON event log; the error is one plain line.
    plain = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert len(plain) == 1, f"expected one error line, got {plain}"
    assert plain[0].startswith("flowworker: error:"), plain[0]
    assert "NOTIFY" in plain[0], plain[0]
    assert "poll" in plain[0], plain[0]
    assert not worker.find("worker.ready"), "it must not start serving"
