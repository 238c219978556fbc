"""Fixtures for the acceptance tests: `flowworker run` as a real subprocess
(tests/support/worker_fixtures.py, a plugin of the top conftest), the flows
of tests/apps/flows.py, and the invariant checker after every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def check_invariants_after_each_test(invariants: None) -> None:
    """Every acceptance test is followed by the invariant checker."""
