"""What `flowworker dashboard` was started with."""

from __future__ import annotations

from dataclasses import dataclass, field

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class DashboardConfig:
    """database_url: where to read (and act); allow_actions: show and take
    the action forms (else every POST is 403); show_payloads: show run
    inputs and outputs (else hidden: they may hold personal data);
    refresh_seconds: how often the lists and a running run's page reload
    (htmx); allowed_hosts: Host headers answered (loopback names when bound
    to loopback, so a DNS-rebinding page cannot reach the dashboard)."""

    database_url: str
    allow_actions: bool = False
    show_payloads: bool = False
    refresh_seconds: float = 3.0
    allowed_hosts: tuple[str, ...] = field(default=LOOPBACK_HOSTS)
    pool_size: int = 4


def hosts_for(bind_host: str) -> tuple[str, ...]:
    """The Host headers to answer for a bind address: loopback names for a
    loopback bind, any for another (it is then reached by some name)."""
    if bind_host in LOOPBACK_HOSTS or bind_host.startswith("127."):
        return (*LOOPBACK_HOSTS, bind_host)
    return ("*",)
