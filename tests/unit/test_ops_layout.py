"""The terminal view of a run: the DAG as a tree, map counts, durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flowworker.cli.dag import guides, tasks_cell
from flowworker.cli.render import first_line, seconds
from flowworker.durations import format_duration, parse_duration
from flowworker.ops.graph import depths, tree
from flowworker.ops.models import StepDetail, TaskCounts

DIAMOND = ["prepare", "left", "right", "items", "square", "summarize"]
DIAMOND_DEPS = {"left": ["prepare"], "right": ["prepare"], "items": ["prepare"],
                "square": ["items"], "summarize": ["left", "right", "square"]}


def drawn(order: list[str], deps: dict[str, list[str]], ascii_only: bool = False) -> list[str]:
    return [guides(row, ascii_only) + row.step
            + (f" (also after {', '.join(row.also_after)})" if row.also_after else "")
            for row in tree(order, deps)]


def test_a_diamond_is_drawn_once_per_step_under_its_longest_chain() -> None:
    assert drawn(DIAMOND, DIAMOND_DEPS) == [
        "prepare",
        "├── left",
        "├── right",
        "└── items",
        "    └── square",
        "        └── summarize (also after left, right)",
    ]


def test_ascii_guides_and_several_roots() -> None:
    order = ["a", "b", "c", "d", "e"]
    deps = {"c": ["a"], "d": ["a"], "e": ["b", "c"]}
    assert drawn(order, deps, ascii_only=True) == [
        "a",
        "|-- c",
        "|   `-- e (also after b)",
        "`-- d",
        "b",
    ]


def test_depths_are_the_longest_path_from_a_root() -> None:
    assert depths(DIAMOND, DIAMOND_DEPS) == {
        "prepare": 0, "left": 1, "right": 1, "items": 1, "square": 2, "summarize": 3}


def test_a_chain_deeper_than_the_recursion_limit() -> None:
    order = [f"s{i}" for i in range(5000)]
    deps = {f"s{i}": [f"s{i - 1}"] for i in range(1, 5000)}
    rows = tree(order, deps)
    assert [r.step for r in rows] == order
    assert rows[-1].depth == 4999


def step(step_type: str, status: str, **counts: int) -> StepDetail:
    tasks = TaskCounts(**{name: counts.get(name, 0) for name in
                          ("total", "queued", "started", "completed", "failed", "cancelled")})
    return StepDetail("s", step_type, status, None, None, None, None, tasks, 0)


def test_map_counts() -> None:
    assert tasks_cell(step("map", "failed", total=15, completed=12, failed=1, cancelled=2)) == (
        "12/15 done, 1 failed, 2 cancelled")
    assert tasks_cell(step("map", "completed", total=0)) == "0/0 done"
    assert tasks_cell(step("map", "created")) == ""
    assert tasks_cell(step("single", "completed", total=1, completed=1)) == ""


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0.213, "0.21 s"), (12.04, "12.0 s"), (185, "3m05s"), (7800, "2h10m"),
    (277200, "3d05h"),
])
def test_seconds(value: float | None, shown: str) -> None:
    assert seconds(value) == shown


def test_first_line() -> None:
    assert first_line("\n  boom  \nat line 2") == "boom"
    assert first_line("x" * 100, limit=10) == "xxxxxxx..."
    assert first_line(None) == ""


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("1h30m", timedelta(minutes=90)),
    ("90s", timedelta(seconds=90)), ("2w", timedelta(weeks=2)), (" 7D ", timedelta(days=7)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["banana", "", "7", "d", "-1d", "1.5h", "0s", "7 d",
                                  "99999999999d", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
