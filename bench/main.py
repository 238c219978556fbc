"""Set up the throwaway cluster and PgQueuer venv, run the suite, write the results."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import docs, fw
from bench.pg import BenchCluster, Pgbench
from bench.pgq import PgQueuer, make_venv
from bench.report import ceiling_table, comparison_table, text_table, to_json, write_json
from bench.suite import FULL, QUICK, Params, Results, Suite, say

# The checkout `make bench` was started in: results go here. The measured code
# is a snapshot of it (see snapshot()), so ROOT comes from the environment there.
ROOT = Path(os.environ.get("BENCH_REPO", Path(__file__).resolve().parent.parent))
SNAPSHOT_ENV = "BENCH_HOME"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _git_commit() -> str:
    """The checked-out commit (read-only git commands), '+ changes' when dirty."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def _versions(python: Path) -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' "
            "for p in ('pgqueuer', 'asyncpg', 'uvloop')))")
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def machine_info(bc: BenchCluster, python: Path, load_before: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": len(os.sched_getaffinity(0)),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "PostgreSQL": bc.version(),
        "Python": platform.python_version(),
        "PgQueuer side": _versions(python),
        "flowworker commit": _git_commit() + " (copied when the run started)",
        "load average before": load_before,
        "load average after": _load(),
    }


def snapshot(home: Path) -> Path:
    """Copy the code under test into home/src, laid out as installed packages.

    Other people may edit or commit in this checkout while the benchmark runs
    for 20 minutes; a worker started later must run the same code (and SQL)
    that migrated the database. PYTHONPATH=home/src wins over the editable install.
    """
    src = home / "src"
    skip = shutil.ignore_patterns("__pycache__", "results")
    shutil.copytree(ROOT / "worker", src / "flowworker", ignore=skip)
    shutil.copytree(ROOT / "cli", src / "flowworker" / "cli", ignore=skip)
    shutil.copytree(ROOT / "sql", src / "flowworker" / "sql", ignore=skip)
    shutil.copytree(ROOT / "bench", src / "bench", ignore=skip)
    return src


def run(p: Params, home: Path) -> tuple[Results, dict[str, Any], Path]:
    load_before = _load()
    began = time.monotonic()
    logdir = home / "logs"
    logdir.mkdir()
    bc = BenchCluster(home)
    with ThreadPoolExecutor(1) as pool:
        say(f"» PgQueuer venv in {home / 'pgq-venv'} (pip install, in the background)")
        venv = pool.submit(make_venv, home / "pgq-venv")
        bc.start()
        say(f"» PostgreSQL {bc.version()} on 127.0.0.1:{bc.port}, data in {home / 'pg'}")
        try:
            fw.make_template(bc, home)
            pgbench = Pgbench(bc, home)
            python = venv.result()
        except BaseException:
            bc.stop()
            raise
    try:
        pgq = PgQueuer(bc, python, logdir)
        pgq.make_template()
        say(f"» setup took {time.monotonic() - began:.0f} s; measuring "
            f"({p.reps} repetition(s))")
        results = Suite(p, bc, pgq, pgbench, logdir).run()
        meta = machine_info(bc, python, load_before)
    finally:
        bc.stop()
    meta["bench wall time"] = f"{time.monotonic() - began:.0f} s"
    out_dir, stem = (ROOT / "bench" / "results", "quick") if p.quick else (ROOT / "docs",
                                                                            "performance")
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file, png = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    write_json(data_file, to_json(results, p, meta))
    pgq.plot(data_file, png)
    markdown = out_dir / f"{stem}.md"
    previous = markdown.read_text() if markdown.exists() else ""
    markdown.write_text(docs.keep_hand_written(docs.render(results, p, meta, png.name), previous))
    return results, meta, markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, small N, no 100,000 drain (under 2 minutes)")
    args = parser.parse_args(argv)
    if SNAPSHOT_ENV not in os.environ:
        with tempfile.TemporaryDirectory(prefix="flowworker-bench-") as tmp:
            src = snapshot(Path(tmp))
            env = {**os.environ, SNAPSHOT_ENV: tmp, "BENCH_REPO": str(ROOT),
                   "PYTHONPATH": str(src)}
            code = subprocess.run([sys.executable, "-m", "bench", *(argv or sys.argv[1:])],
                                  cwd=src, env=env, check=False).returncode
        raise SystemExit(code)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    p = QUICK if args.quick else FULL
    results, meta, markdown = run(p, Path(os.environ[SNAPSHOT_ENV]))
    say("")
    say(text_table(comparison_table(results, p)))
    say("")
    say(text_table(ceiling_table(results, p)))
    say("")
    for problem in results.problems:
        say(f"! {problem[:300]}")
    say(f"» {meta['bench wall time']}; wrote {markdown.relative_to(ROOT)} and its .png, .json")
