"""The PgQueuer side: a throwaway venv, its schema in a database of its own,
and bench/pgq_driver.py run with that venv's python."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg

from bench.fw import DrainResult, exit_problems
from bench.pg import BenchCluster, wait_until
from bench.proc import log_problems, reap, stop, vm_hwm_kib

DRIVER = Path(__file__).resolve().parent / "pgq_driver.py"
PLOT = Path(__file__).resolve().parent / "plot.py"
TEMPLATE = "pgq_template"
PACKAGES = ["pgqueuer==1.6.0", "asyncpg", "uvloop", "matplotlib"]
BATCH_SIZE = 100
ENQUEUE_BATCH = 1000


def make_venv(path: Path) -> Path:
    """python3 -m venv + pip install, never touching the project's venv."""
    subprocess.run(["python3", "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile",
                    "--disable-pip-version-check", *PACKAGES],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return python


class PgQueuer:
    def __init__(self, bc: BenchCluster, python: Path, logdir: Path) -> None:
        self.bc = bc
        self.python = python
        self.logdir = logdir

    def command(self, *args: str) -> list[str]:
        return [str(self.python), str(DRIVER), *args]

    def call(self, *args: str) -> dict[str, object]:
        done = subprocess.run(self.command(*args), check=False, capture_output=True, text=True,
                              timeout=900)
        if done.returncode:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"pgq_driver.py {args[0]} failed ({done.returncode}):\n{tail}")
        out = done.stdout
        result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return result

    def spawn(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logdir / f"pgq-{time.monotonic_ns()}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(self.command(*args), stdout=subprocess.DEVNULL, stderr=err)
        return proc, log

    def make_template(self) -> None:
        url = self.bc.create_db(TEMPLATE)
        self.call("install", url)

    def enqueue(self, url: str, count: int, batch: int) -> float:
        seconds = self.call("enqueue", url, str(count), str(batch))["seconds"]
        assert isinstance(seconds, float)
        return seconds

    def enqueue_single(self, count: int) -> float:
        name, url = self.bc.fresh(TEMPLATE)
        try:
            return self.enqueue(url, count, 1)
        finally:
            self.bc.drop_db(name)

    def drain(self, jobs: int, procs: int) -> DrainResult:
        name, url = self.bc.fresh(TEMPLATE)
        try:
            enqueue_seconds = self.enqueue(url, jobs, ENQUEUE_BATCH)
            self.bc.checkpoint()
            spawned = [self.spawn("drain", url, str(BATCH_SIZE)) for _ in range(procs)]
            exits = [reap(proc, timeout=120 + jobs / 200) for proc, _ in spawned]
            problems = log_problems(log for _, log in spawned) + exit_problems(exits)
            done, seconds, left = self._window(url)
            if done != jobs or left:
                problems.append(f"pgqueuer: {done} of {jobs} jobs logged successful, "
                                f"{left} left in the queue")
            ok = done == jobs and not left and all(e.code == 0 and not e.timed_out
                                                   for e in exits)
            return DrainResult(done, seconds, enqueue_seconds,
                               max(e.peak_rss_kib for e in exits), problems, ok)
        finally:
            self.bc.drop_db(name)

    @staticmethod
    def _window(url: str) -> tuple[int, float, int]:
        """(successful jobs, seconds from first pick to last success, jobs left)."""
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'successful'),"
                " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
                "  - min(created) FILTER (WHERE status = 'picked'))::float8,"
                " (SELECT count(*) FROM pgqueuer)"
                " FROM pgqueuer_log").fetchone()
        assert row is not None
        return int(row[0]), float(row[1] or 0.0), int(row[2])

    def latency(self, count: int, interval: float) -> tuple[list[float], int, list[str]]:
        """(enqueue -> handler start samples, idle worker peak RSS KiB, problems)."""
        name, url = self.bc.fresh(TEMPLATE)
        stamps = self.logdir / f"pgq-stamps-{name}.txt"
        sent = self.logdir / f"pgq-sent-{name}.txt"
        proc, log = self.spawn("worker", url, str(stamps))
        problems: list[str] = []
        try:
            self.enqueue(url, 1, 1)  # warm up, then let the worker go idle
            if not wait_until(lambda: _lines(stamps) >= 1, timeout=60):
                problems.append("pgqueuer latency: the warm-up job did not start within 60 s")
            time.sleep(1.0)
            idle_rss = vm_hwm_kib(proc.pid)
            self.call("latency", url, str(count), str(interval), str(sent))
            if not wait_until(lambda: _lines(stamps) >= count + 1, timeout=60, interval=0.1):
                problems.append("pgqueuer latency: jobs still unstarted after 60 s")
            exit_ = stop(proc)
            problems += log_problems([log]) + exit_problems([exit_])
            arrived = _pairs(stamps)
            samples = [arrived[job] - t0 for job, t0 in _pairs(sent).items() if job in arrived]
            if len(samples) != count:
                problems.append(f"pgqueuer latency: {len(samples)}/{count} starts recorded")
            return samples, idle_rss, problems
        finally:
            if proc.returncode is None:
                stop(proc)
            self.bc.drop_db(name)

    def plot(self, results: Path, png: Path) -> None:
        subprocess.run([str(self.python), str(PLOT), str(results), str(png)], check=True)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _pairs(path: Path) -> dict[str, float]:
    pairs: dict[str, float] = {}
    for line in path.read_text().splitlines():
        key, value = line.split()
        pairs[key] = float(value)
    return pairs


