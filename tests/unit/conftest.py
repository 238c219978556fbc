from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.unit.fakes import LogEvents


@pytest.fixture
def events() -> Iterator[LogEvents]:
    """flowworker's log events during the test (INFO and up)."""
    logger = logging.getLogger("flowworker")
    handler, level = LogEvents(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
