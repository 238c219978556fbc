"""Tables for the terminal and docs/performance.md, and the raw JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import Series
from bench.suite import Params, Results


@dataclass(frozen=True)
class Row:
    label: str
    fw: str | None
    pgq: str | None
    anchor: str = ""
    lower_is_better: bool = False


def comparison_rows(p: Params) -> list[Row]:
    rows = [Row(f"drain {n:,}, 1 process (tasks/s)", f"fw.drain.{n}", f"pgq.drain.{n}",
                {20_000: "14,616", 100_000: "8,105"}.get(n, ""))
            for n in p.drain_sizes]
    rows += [
        Row(f"drain {p.two_proc_jobs:,}, 2 processes (tasks/s)", "fw.drain2", "pgq.drain2",
            "19,384" if p.two_proc_jobs == 20_000 else ""),
        Row(f"DAG {p.dag_runs:,} runs x 14 steps (step executions/s)", "fw.dag", None),
    ]
    rows += [Row(f"enqueue -> handler start p{pct} (ms)", f"fw.start.p{pct}", f"pgq.start.p{pct}",
                 {50: "3.6", 95: "5.2", 99: "8.0"}[pct], lower_is_better=True)
             for pct in (50, 95, 99)]
    rows += [Row(f"step -> next step hop p{pct} (ms)", f"fw.hop.p{pct}", None,
                 lower_is_better=True) for pct in (50, 95, 99)]
    rows += [
        Row("enqueue, one per transaction (runs/s)", "fw.enqueue.single", "pgq.enqueue.single",
            "2,561"),
        Row("enqueue, 1,000 per call (runs/s)", "fw.enqueue.batch", "pgq.enqueue.batch",
            "42,000-52,000"),
        Row("worker peak RSS, idle (MiB)", "fw.rss.idle", "pgq.rss.idle", "48",
            lower_is_better=True),
        Row(f"worker peak RSS, after the {p.drain_sizes[-1]:,} drain (MiB)", "fw.rss.drain",
            "pgq.rss.drain", lower_is_better=True),
    ]
    return rows


CEILING_ROWS = [
    ("pgbench claim 100 + delete, SKIP LOCKED, 1 connection (jobs/s)", "pgbench.claim.c1",
     "55,548"),
    ("pgbench claim 100 + delete, SKIP LOCKED, 4 connections (jobs/s)", "pgbench.claim.c4",
     "85,634"),
    ("pgbench single-row UPDATE commits, 1 client (TPS)", "pgbench.commit", "4,193"),
]


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit in ("ms",):
        return f"{value:.1f}"
    if unit == "ratio":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def cell(series: Series | None) -> str:
    if series is None or not series.values:
        return "-"
    text = _number(series.median, series.unit)
    if len(series.values) > 1:
        text += f" ({_number(series.low, series.unit)}-{_number(series.high, series.unit)})"
    return text


def ratio(results: Results, row: Row) -> str:
    if row.fw is None or row.pgq is None:
        return "-"
    mine, theirs = results.series.get(row.fw), results.series.get(row.pgq)
    if not (mine and theirs and mine.values and theirs.values) or theirs.median == 0:
        return "-"
    value = mine.median / theirs.median
    return f"{value:.2f}x" + (" (lower is better)" if row.lower_is_better else "")


def comparison_table(results: Results, p: Params) -> list[list[str]]:
    table = [["measurement", "flowworker", "PgQueuer 1.6", "flowworker / PgQueuer",
              "PgQueuer anchor"]]
    for row in comparison_rows(p):
        table.append([row.label, cell(results.series.get(row.fw or "")),
                      cell(results.series.get(row.pgq or "")), ratio(results, row),
                      row.anchor or "-"])
    return table


def ceiling_table(results: Results, p: Params) -> list[list[str]]:
    table = [["measurement", "this run", "anchor"]]
    table += [[label, cell(results.series.get(key)), anchor] for label, key, anchor in
              CEILING_ROWS]
    first = p.drain_sizes[0]
    for who, key in (("flowworker", f"fw.drain.{first}"), ("PgQueuer", f"pgq.drain.{first}")):
        for conns, ceiling in (("1 connection", "pgbench.claim.c1"),
                               ("4 connections", "pgbench.claim.c4")):
            drained, top = results.series.get(key), results.series.get(ceiling)
            share = "-"
            if drained and top and drained.values and top.values:
                share = f"{100 * drained.median / top.median:.0f} %"
            table.append([f"{who} drain {first:,} as a share of the pgbench ceiling, {conns}",
                          share, "-"])
    return table


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def to_json(results: Results, p: Params, meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "params": p.__dict__,
            "series": {key: s.to_json() for key, s in sorted(results.series.items())},
            "problems": results.problems,
            "profile": dataclasses.asdict(results.profile) if results.profile else None}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def profile_table(results: Results) -> list[list[str]] | None:
    """Database time per SQL function in the profiled drain (self time, most first)."""
    prof = results.profile
    if prof is None or not prof.tasks:
        return None
    table = [["function", "calls", "total ms", "self ms", "self us per task",
              "self share of the drain's wall time"]]
    for f in prof.functions:
        table.append([f.name, f"{f.calls:,}", f"{f.total_ms:,.0f}", f"{f.self_ms:,.0f}",
                      f"{1000 * f.self_ms / prof.tasks:.0f}",
                      f"{100 * f.self_ms / 1000 / prof.seconds:.0f} %" if prof.seconds else "-"])
    return table
