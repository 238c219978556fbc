"""Draw docs/performance.png from the JSON that `make bench` writes.

Runs with the throwaway venv's python (matplotlib is installed there, never in
the project's venv):  plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FW, PGQ = "#1f77b4", "#ff7f0e"


def stat(series: dict[str, Any], key: str) -> tuple[float, float, float]:
    """(median, median - min, max - median); zeros when missing."""
    s = series.get(key)
    if not s or not s["values"]:
        return 0.0, 0.0, 0.0
    return s["median"], s["median"] - s["min"], s["max"] - s["median"]


def bars(ax: Any, series: dict[str, Any], groups: list[tuple[str, str | None, str | None]],
         title: str, unit: str) -> None:
    width = 0.38
    for i, (_, fw_key, pgq_key) in enumerate(groups):
        pair = [(fw_key, FW, "flowworker"), (pgq_key, PGQ, "PgQueuer 1.6")]
        drawn = [(key, colour, name) for key, colour, name in pair if key is not None]
        for j, (key, colour, name) in enumerate(drawn):
            offset = 0.0 if len(drawn) == 1 else (j - 0.5) * width
            median, below, above = stat(series, key)
            ax.bar(i + offset, median, width, color=colour, yerr=[[below], [above]], capsize=3,
                   label=name)
            if median:
                # The label sits above the min-max whisker.
                ax.annotate(f"{median:,.0f}" if median >= 100 else f"{median:.1f}",
                            (i + offset, median + above), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    legend(ax)


def legend(ax: Any, columns: int = 1) -> None:
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=columns, loc="upper center")


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    with open(source) as handle:
        data = json.load(handle)
    series, params = data["series"], data["params"]
    sizes = params["drain_sizes"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.8))
    drains: list[tuple[str, str | None, str | None]] = [
        (f"drain {n:,}\n1 process", f"fw.drain.{n}", f"pgq.drain.{n}") for n in sizes]
    drains += [(f"drain {params['two_proc_jobs']:,}\n2 processes", "fw.drain2", "pgq.drain2"),
               ("DAG steps\n1 process", "fw.dag", None)]
    bars(left, series, drains, "Throughput (median, min-max; log scale)", "tasks / s")
    left.set_yscale("log")
    for key, style, name in (("pgbench.claim.c1", "--", "pgbench ceiling, 1 conn"),
                             ("pgbench.claim.c4", ":", "pgbench ceiling, 4 conns")):
        if key in series:
            left.axhline(series[key]["median"], color="grey", linestyle=style, label=name)
            left.set_ylim(top=series[key]["median"] * 12)  # room for the legend above
    legend(left, columns=2)
    latencies: list[tuple[str, str | None, str | None]] = [
        (f"start p{p}", f"fw.start.p{p}", f"pgq.start.p{p}") for p in (50, 95, 99)]
    latencies += [(f"hop p{p}", f"fw.hop.p{p}", None) for p in (50, 95, 99)]
    bars(middle, series, latencies, "Latency, idle worker (lower is better)", "ms")
    enqueue: list[tuple[str, str | None, str | None]] = [
        ("one per\ntransaction", "fw.enqueue.single", "pgq.enqueue.single"),
        ("1,000 per\ncall", "fw.enqueue.batch", "pgq.enqueue.batch")]
    bars(right, series, enqueue, "Enqueue rate", "runs / s")
    right.set_yscale("log")
    meta = data["meta"]
    fig.suptitle(f"flowworker vs PgQueuer - {meta['date']} - {meta['cpus']} cores, "
                 f"PostgreSQL {meta['PostgreSQL']}, {params['reps']} repetition(s); "
                 "shared noisy machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
