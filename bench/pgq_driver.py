"""Drive PgQueuer for `make bench`. Runs with the python of a throwaway venv
that has pgqueuer, asyncpg and uvloop; it imports nothing from flowworker.

    pgq_driver.py install  URL
    pgq_driver.py enqueue  URL COUNT BATCH       # BATCH 1: one enqueue call (transaction) per job
    pgq_driver.py drain    URL BATCH_SIZE        # QueueManager.run(mode=drain)
    pgq_driver.py worker   URL STAMPS            # idle-to-busy worker, until SIGTERM
    pgq_driver.py latency  URL COUNT INTERVAL OUT

Every command prints one JSON object on stdout. Timing of the drain comes from
pgqueuer_log (DB clock), read by the caller; `worker` appends `job_id time`
lines to STAMPS when a handler starts, `latency` writes `job_id time` lines
taken just before each enqueue call (which commits on its own).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import IO, Any

import asyncpg
import uvloop
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "noop"


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def connect(url: str) -> Any:
    return await asyncpg.connect(url)


async def install(url: str) -> None:
    conn = await connect(url)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()
    emit({"installed": True})


async def enqueue(url: str, count: int, batch: int) -> None:
    conn = await connect(url)
    queries = Queries(AsyncpgDriver(conn))
    began = time.perf_counter()
    try:
        if batch == 1:
            for _ in range(count):
                await queries.enqueue(ENTRYPOINT, None)
        else:
            left = count
            while left > 0:
                size = min(batch, left)
                await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)
                left -= size
    finally:
        seconds = time.perf_counter() - began
        await conn.close()
    emit({"count": count, "batch": batch, "seconds": seconds})


def _manager(conn: Any) -> QueueManager:
    return QueueManager(Queries(AsyncpgDriver(conn)))


async def drain(url: str, batch_size: int) -> None:
    conn = await connect(url)
    manager = _manager(conn)
    seen = [0]

    async def noop(_job: Job) -> None:
        seen[0] += 1

    manager.entrypoint(ENTRYPOINT)(noop)

    began = time.perf_counter()
    try:
        await manager.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    finally:
        seconds = time.perf_counter() - began
        await conn.close()
    emit({"handled": seen[0], "process_seconds": seconds})


async def worker(url: str, stamps_path: str) -> None:
    conn = await connect(url)
    manager = _manager(conn)
    stamps: IO[str] = open(stamps_path, "a", buffering=1)  # noqa: SIM115, ASYNC230

    async def noop(job: Job) -> None:
        stamps.write(f"{job.id} {time.time():.6f}\n")

    manager.entrypoint(ENTRYPOINT)(noop)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, manager.shutdown.set)
    try:
        await manager.run(batch_size=100)
    finally:
        stamps.close()
        await conn.close()
    emit({"stopped": True})


async def latency(url: str, count: int, interval: float, out_path: str) -> None:
    conn = await connect(url)
    queries = Queries(AsyncpgDriver(conn))
    lines: list[str] = []
    next_at = time.perf_counter()
    try:
        for _ in range(count):
            began = time.time()
            ids = await queries.enqueue(ENTRYPOINT, None)
            lines.append(f"{ids[0]} {began:.6f}\n")
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        await conn.close()
    with open(out_path, "w") as out:  # noqa: ASYNC230 - written once, after the timing
        out.writelines(lines)
    emit({"enqueued": len(lines)})


COMMANDS: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "install": install, "enqueue": enqueue, "drain": drain, "worker": worker, "latency": latency,
}
CONVERT: dict[str, list[Callable[[str], Any]]] = {
    "install": [str], "enqueue": [str, int, int], "drain": [str, int],
    "worker": [str, str], "latency": [str, int, float, str],
}


def main() -> None:
    command, *args = sys.argv[1:]
    kinds = CONVERT[command]
    if len(args) != len(kinds):
        raise SystemExit(f"usage: {command} takes {len(kinds)} arguments")
    values = [kind(arg) for kind, arg in zip(kinds, args, strict=True)]
    uvloop.run(COMMANDS[command](*values))


if __name__ == "__main__":
    main()
