"""What the metrics' help texts promise an operator reading /metrics."""

from __future__ import annotations

from flowworker.metrics import REGISTRY


def documentation(name: str) -> str:
    [family] = [m for m in REGISTRY.collect() if m.name == name]
    return family.documentation


def test_the_queue_gauges_say_how_old_they_may_be() -> None:
    for name in ("flowworker_queue_depth", "flowworker_queue_oldest_message_age_seconds"):
        assert "last heartbeat" in documentation(name)
        assert "FLOWWORKER_HEARTBEAT_INTERVAL" in documentation(name)


def test_reconnects_say_what_counts_as_one() -> None:
    text = documentation("flowworker_db_reconnects")
    for event in ("db.reconnecting", "worker.heartbeat_missed", "listener.lost"):
        assert event in text
