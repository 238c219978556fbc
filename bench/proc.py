"""Child processes: reap with their peak RSS, read VmHWM, stop politely."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE = 15.0  # seconds after SIGTERM before SIGKILL


@dataclass(frozen=True)
class Exit:
    """How a child ended: exit code, peak RSS (KiB, from wait4), whether we had to stop it."""

    code: int
    peak_rss_kib: int
    timed_out: bool


def reap(proc: subprocess.Popen[bytes], timeout: float) -> Exit:
    """Wait for proc (SIGTERM at the timeout, SIGKILL later) and return its
    exit code with the peak RSS the kernel recorded for it. Never call
    proc.poll()/wait() first: they reap the child and lose its rusage."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Exit(proc.returncode, int(usage.ru_maxrss), timed_out)
        now = time.monotonic()
        if now > deadline and not timed_out:
            timed_out = True
            os.kill(proc.pid, signal.SIGTERM)
            deadline = now + KILL_GRACE
        elif now > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            deadline = now + 3600
        time.sleep(0.02)


def vm_hwm_kib(pid: int) -> int:
    """The peak resident set size of a running process so far, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> Exit:
    """SIGTERM, then reap. (Popen.send_signal would poll() and so reap the
    child without its rusage; until we reap it, its pid cannot be reused.)"""
    if proc.returncode is None:
        os.kill(proc.pid, signal.SIGTERM)
    return reap(proc, timeout)


def log_problems(paths: Iterable[Path]) -> list[str]:
    """What workers wrote to stderr (they log only WARNING and above): every
    JSON event line, and of anything else (a traceback) its last line."""
    found: list[str] = []
    for path in paths:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        found += [line for line in lines if line.startswith("{")]
        other = [line for line in lines if not line.startswith("{")]
        if other:
            found.append(f"{other[-1].strip()} (last of {len(other)} non-JSON stderr lines)")
    return found
