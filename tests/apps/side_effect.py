"""A module with a side effect on import (RELIABILITY S4): it creates the file
named by FLOWWORKER_TEST_SIDE_EFFECT. A queue message names it as its step;
a worker that imported anything a database string names would leave the
file behind."""

from __future__ import annotations

import os
from pathlib import Path

_TARGET = os.environ.get("FLOWWORKER_TEST_SIDE_EFFECT")
if _TARGET:
    Path(_TARGET).write_text("tests.apps.side_effect was imported\n")
