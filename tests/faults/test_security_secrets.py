"""RELIABILITY S5: a secret in a flow input, in an output and in an
exception message appears neither in the worker's logs at the default
level nor on /metrics; /metrics, /healthz and /readyz listen on 127.0.0.1
unless told otherwise."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence

import pytest

from flowworker.devdb import free_port
from flowworker.settings import Settings
from tests.acceptance.harness import Database, WorkerProcess, http_get, wait_until
from tests.faults.support import tcp_sockets
from tests.support.worker_fixtures import Spawn

pytestmark = [pytest.mark.acceptance, pytest.mark.usefixtures("invariants")]

DEFAULT_METRICS_PORT = 9108


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than 127.x, best effort."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect sends nothing
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    unspecified = "0.0.0.0"  # noqa: S104 - compared against, never bound
    return sorted(a for a in found if not a.startswith("127.") and a != unspecified)


def listening(worker: WorkerProcess, port: int) -> list[str]:
    return [s.local_host for s in tcp_sockets(worker.pid)
            if s.state == "0A" and s.local_port == port]


def assert_loopback_only(worker: WorkerProcess, port: int) -> None:
    hosts = wait_until(lambda: listening(worker, port), timeout=10,
                       message=f"the worker listening on port {port}")
    assert set(hosts) == {"127.0.0.1"}, f"the endpoints listen on {hosts}, not only 127.0.0.1"
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    for address in non_loopback_addresses():
        status, body = http_get(f"http://{address}:{port}/healthz", timeout=2)
        assert status == 0, f"/healthz answered {status} on {address}: {body[:200]}"


def secrets_in(texts: Sequence[str], secret: str) -> list[str]:
    return [text for text in texts if secret in text]


def test_s5_secrets_stay_out_of_logs_and_metrics(db: Database, spawn: Spawn) -> None:
    secret = f"hunter2-{uuid.uuid4().hex}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # At the default level (the harness turns on DEBUG for its event checks).
    default_level = str(Settings.model_fields["log_level"].default)
    worker = spawn("secret", name="worker", args=["--metrics-addr", f":{port}"],
                   env={"FLOWWORKER_LOG_LEVEL": default_level})
    ok = db.start_run("secret", {"secret": secret})
    bad = db.start_run("secret", {"secret": secret, "fail": True})
    assert db.wait_runs([ok], timeout=10, workers=[worker]) == {"completed": 1}
    assert db.wait_runs([bad], timeout=10, workers=[worker]) == {"failed": 1}
    # The secret did travel: it is in the run's output and the task's error.
    assert db.run_outputs([ok])[ok] == {"leak": {"echo": secret}}
    [failed] = db.tasks([bad])
    assert secret in (failed.error_message or ""), failed
    worker.wait_for_event("task.failed", run_id=bad, outcome="exhausted", timeout=10)
    assert default_level == "INFO", default_level

    status, metrics_text = http_get(base + "/metrics")
    assert status == 200
    assert secret not in metrics_text, "the secret is on /metrics"
    for path in ("/healthz", "/readyz", "/nope"):
        assert secret not in http_get(base + path)[1]

    worker.terminate()
    assert worker.wait_exit(timeout=30) == 0, worker.tail()
    leaked = secrets_in(worker.lines, secret)
    assert not leaked, f"the secret is in the worker's log: {leaked[:3]}"
    assert worker.find("task.failed"), "no task.failed event: the log was not looked at"

    # ":port" (no host) means 127.0.0.1, too.
    assert_loopback_only(spawn("secret", name="port-only", args=["--metrics-addr", f":{port}"]),
                         port)


def test_s5_endpoints_bind_to_loopback_by_default(db: Database, spawn: Spawn) -> None:
    default = Settings.model_fields["metrics_addr"].default
    assert default == f"127.0.0.1:{DEFAULT_METRICS_PORT}", default
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", DEFAULT_METRICS_PORT))  # noqa: S104 - probing only
        except OSError:
            pytest.skip(f"port {DEFAULT_METRICS_PORT} is in use on this machine")
    # No --metrics-addr and no FLOWWORKER_METRICS_ADDR: the real default.
    worker = DefaultAddrWorker(db.url, ["secret"], name="default-addr")
    try:
        worker.start()
        assert_loopback_only(worker, DEFAULT_METRICS_PORT)
    finally:
        worker.close()


class DefaultAddrWorker(WorkerProcess):
    """A worker started without --metrics-addr (the harness turns it off)."""

    def __init__(self, database_url: str, flows: Sequence[str], *, name: str) -> None:
        super().__init__(database_url, flows, app="tests.apps.faults", name=name)
        self.env.pop("FLOWWORKER_METRICS_ADDR", None)

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--metrics-addr")
        return command[:at] + command[at + 2:]
