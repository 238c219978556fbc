"""Fixtures for the acceptance tests: `flowworker run` as a real subprocess
(tests/support/worker_fixtures.py), the flows of tests/apps/flows.py, and
the invariant checker after every test."""

from __future__ import annotations

import pytest

from tests.support.worker_fixtures import (  # noqa: F401 - fixtures used by name
    Spawn,
    cluster_server,
    db,
    dbname,
    default_app,
    flow_apps,
    invariants,
    ledger,
    spawn,
    spawned,
    worker_log_dir,
)


@pytest.fixture(autouse=True)
def check_invariants_after_each_test(invariants: None) -> None:  # noqa: F811
    """Every acceptance test is followed by the invariant checker."""
