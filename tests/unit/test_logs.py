"""Log lines as a reader sees them: lists in both formats, library records,
and asyncpg's pool-floor retries kept out of the default level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from flowworker import logs

FLOOR = "Failed to restore the pool connection floor; retrying"


@pytest.fixture(autouse=True)
def restore_loggers() -> Iterator[None]:
    """configure() replaces the handlers of flowworker's and asyncpg's loggers."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("flowworker", "asyncpg")}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def floor_warning() -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        logging.getLogger("asyncpg.pool").warning(FLOOR, exc_info=True)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_lists_read_as_commas_for_people_and_arrays_in_json(
        capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("human", "INFO")
    logs.event("worker.ready", flows=["orders", "signup"], concurrency=10)
    [human] = lines(capsys)
    assert human.endswith("INFO    worker.ready flows=orders,signup concurrency=10")
    logs.configure("json", "INFO")
    logs.event("worker.ready", flows=["orders", "signup"], concurrency=10)
    [line] = lines(capsys)
    assert json.loads(line)["flows"] == ["orders", "signup"]


def test_the_pool_floor_retry_is_not_shown_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "INFO")
    floor_warning()
    logging.getLogger("asyncpg.pool").warning("Pool.close() is taking over 60 seconds")
    [line] = lines(capsys)  # other library warnings still come through
    assert json.loads(line)["message"] == "Pool.close() is taking over 60 seconds"


def test_the_pool_floor_retry_is_a_debug_line_at_debug(
        capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "DEBUG")
    floor_warning()
    [line] = lines(capsys)
    assert json.loads(line) == {
        "ts": json.loads(line)["ts"], "level": "debug", "event": "library.log",
        "logger": "asyncpg.pool", "message": FLOOR, "error": "ConnectionRefusedError"}
