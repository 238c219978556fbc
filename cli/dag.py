"""`runs show` for a person: the run, then its DAG as a tree of steps, each
with its state, tasks, attempts, duration and last error, in aligned columns;
then the run's history (its newest events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from flowworker.cli import render

if TYPE_CHECKING:
    from flowworker.ops.graph import TreeRow
    from flowworker.ops.models import RunDetail, RunEvent, StepDetail

UNICODE_GUIDES = ("├── ", "└── ", "│   ", "    ")
ASCII_GUIDES = ("|-- ", "`-- ", "|   ", "    ")
RUN_ERROR_CHARS = 4000


def guides(row: TreeRow, ascii_only: bool = False) -> str:
    """The tree drawing before a step: a line per open ancestor, then its branch."""
    branch, last, through, blank = ASCII_GUIDES if ascii_only else UNICODE_GUIDES
    if row.depth == 0:
        return ""
    ancestors = "".join(blank if done else through for done in row.lasts[1:-1])
    return ancestors + (last if row.lasts[-1] else branch)


def tasks_cell(step: StepDetail) -> str:
    """A map step's tasks: `12/15 done, 1 failed`; nothing for a single step."""
    if step.step_type != "map" or step.status in (None, "created"):
        return ""
    t = step.tasks
    cell = f"{t.completed}/{t.total} done"
    if t.failed:
        cell += f", {t.failed} failed"
    if t.cancelled:
        cell += f", {t.cancelled} cancelled"
    return cell


def print_run(detail: RunDetail) -> None:
    from flowworker.ops.graph import tree

    out = render.console()
    run = detail.run
    out.print(Text.assemble(("run ", "bold"), str(run.run_id), "  flow ", run.flow_slug, "  ",
                            render.state(run.status)))
    ended = f"   ended {render.when(run.ended_at)}" if run.ended_at else ""
    out.print(f"started {render.when(run.started_at)}{ended}   "
              f"took {render.seconds(run.duration_seconds)}")
    if run.error_message:
        error = run.error_message
        if len(error) > RUN_ERROR_CHARS:
            error = error[:RUN_ERROR_CHARS] + f"... ({len(error) - RUN_ERROR_CHARS} more "\
                "characters; --json shows all)"
        out.print(Text.assemble(("error: ", "bold red"), error))
    out.print()
    steps = {s.step_slug: s for s in detail.steps}
    layout = tree([s.step_slug for s in detail.steps],
                  {s.step_slug: s.depends_on for s in detail.steps})
    ascii_only = not out.encoding.lower().startswith("utf")
    rows = [_row(row, steps[row.step], ascii_only) for row in layout]
    render.print_table(out, ["step", "state", "tasks", "attempts", "took", "last error"], rows,
                           right=["attempts", "took"])
    if detail.events:
        out.print()
        render.print_table(out, ["at", "event", "step", "by", "detail"],
                           [_event_row(e) for e in detail.events])


def _event_row(event: RunEvent) -> list[str | Text]:
    where = event.step_slug or ""
    if event.task_index is not None and where:
        where += f"[{event.task_index}]"
    if event.attempt is not None:
        where += f" attempt {event.attempt}"
    detail = event.detail if isinstance(event.detail, dict) else {}
    text = "  ".join(f"{key}={value}" for key, value in detail.items())
    return [render.when(event.at), event.event, where.strip(), event.actor or "",
            render.first_line(text)]


def _row(row: TreeRow, step: StepDetail, ascii_only: bool) -> list[str | Text]:
    name = guides(row, ascii_only) + step.step_slug
    if step.step_type == "map":
        name += " (map)"
    if row.also_after:  # the tree shows one dep per step; these are the others
        name += f"  (also after {', '.join(row.also_after)})"
    attempts = str(step.attempts) if step.attempts else "-"
    return [name, render.state(step.status), tasks_cell(step), attempts,
            render.seconds(step.duration_seconds), render.first_line(step.last_error)]
