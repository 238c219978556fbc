"""Fixtures of the fault tests: the worker harness (real `flowworker run`
subprocesses, the effect ledger, the invariant checker; see
tests/support/worker_fixtures.py, a plugin of the top conftest), with the
flows of both tests/apps/flows.py and tests/apps/faults.py applied, and
workers running tests/apps/faults.py unless a test says otherwise.

The invariant checker is not autouse here (tests/faults/sql has tests of
its own kind): the worker fault modules opt in with
`pytestmark = pytest.mark.usefixtures("invariants")`.
"""

from __future__ import annotations

import pytest

from tests.acceptance.harness import APP
from tests.faults.support import FAULTS_APP


@pytest.fixture
def flow_apps() -> list[str]:
    return [APP, FAULTS_APP]


@pytest.fixture
def default_app() -> str:
    return FAULTS_APP
