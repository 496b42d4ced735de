"""Running a plan: one worker's share on an event loop (`run_worker`), and a whole run over
`--workers` processes, each with its own loop (uvloop when importable), its share of the
plan and its own Histogram, the parent merging their results (`execute`)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import threading
import time
from typing import Any, TextIO

from .connection import Connection
from .driver import Conn, Driver
from .errors import error_kind
from .plan import Plan
from .progress import Progress
from .result import Result

#: How long worker processes may take to start, in seconds.
STARTUP_TIMEOUT_S = 60.0


async def run_worker(plan: Plan, progress: list[int] | None = None) -> dict[str, Any]:
    """Run one worker's share on the running loop and return its result."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def connect(conn: Connection) -> None:
        try:
            await loop.create_connection(lambda: conn, plan.host, plan.port)
        except OSError as exc:
            if conn.busy_since is not None:
                conn.busy_since = None
                driver.failed(conn, error_kind(exc))

    def opener(driver: Driver, due: float, now: float) -> Conn:
        conn = Connection(driver, due, now)
        task = loop.create_task(connect(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return conn

    def on_finish() -> None:
        if not finished.done():
            finished.set_result(None)

    driver = Driver(
        plan,
        opener,
        time.perf_counter,
        loop.call_later,
        loop.call_soon,
        on_finish,
        progress,
    )
    stop_on_signal = threading.current_thread() is threading.main_thread()
    if stop_on_signal:
        loop.add_signal_handler(signal.SIGINT, driver.stop)
    try:
        driver.begin()
        await finished
    finally:
        if stop_on_signal:
            loop.remove_signal_handler(signal.SIGINT)
        for task in list(tasks):
            task.cancel()
    return driver.result()


def _event_loop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _worker_process(plan: Plan, index: int, shared: Any, barrier: Any, results: Any) -> None:
    """The body of one worker process: wait for the others, run, send the result."""
    progress = _SharedRow(shared, index)
    try:
        barrier.wait()
        result = _event_loop_run(run_worker(plan, progress))  # type: ignore[arg-type]
    except BaseException as exc:  # report, so the parent never waits forever
        results.put((index, {"error": f"{type(exc).__name__}: {exc}"}))
        raise
    results.put((index, result))


class _SharedRow:
    """A worker's row of four counters in a shared array, used like a list."""

    def __init__(self, shared: Any, index: int) -> None:
        self.shared = shared
        self.base = index * 4

    def __setitem__(self, i: int, value: int) -> None:
        self.shared[self.base + i] = value

    def __getitem__(self, i: int) -> int:
        return int(self.shared[self.base + i])


def execute(plan: Plan, workers: int, stream: TextIO | None = None) -> Result:
    """Run `plan` over `workers` processes (in this process when 1) and merge the results."""
    plans = plan.split(workers)
    total_s = None if plan.duration_s is None else plan.duration_s + plan.warmup_s
    progress = Progress(stream, total_s, plan.requests) if stream is not None else None
    result = Result()
    if len(plans) == 1:
        result.add(_event_loop_run(_in_process(plans[0], progress)))
        return result
    ctx = multiprocessing.get_context("spawn")
    shared = ctx.Array("q", 4 * len(plans), lock=False)
    barrier = ctx.Barrier(len(plans) + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(p, i, shared, barrier, results),
            name=f"devrouter-bench-{i}",
            daemon=True,
        )
        for i, p in enumerate(plans)
    ]
    for proc in procs:
        proc.start()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers stop on it and report
    try:
        try:
            barrier.wait(timeout=STARTUP_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise RuntimeError("the worker processes did not start") from None
        parts: dict[int, dict[str, Any]] = {}
        while len(parts) < len(procs):
            with contextlib.suppress(queue.Empty):
                index, part = results.get(timeout=0.05)
                parts[index] = part
            if progress is not None and progress.due():
                rows = [_SharedRow(shared, i) for i in range(len(procs))]
                progress.show(sum(r[0] for r in rows), sum(r[1] for r in rows))
            if len(parts) < len(procs) and not any(p.is_alive() for p in procs):
                with contextlib.suppress(queue.Empty):
                    while True:
                        index, part = results.get(timeout=0.5)
                        parts[index] = part
                break
    finally:
        signal.signal(signal.SIGINT, old)
        if progress is not None:
            progress.end()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    failures = [p["error"] for p in parts.values() if "error" in p]
    if failures or len(parts) < len(procs):
        raise RuntimeError(failures[0] if failures else "a worker process died")
    for part in parts.values():
        result.add(part)
    return result


async def _in_process(plan: Plan, progress: Progress | None) -> dict[str, Any]:
    row = [0, 0, 0, 0]
    if progress is None:
        return await run_worker(plan, row)
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []

    def show() -> None:
        progress.show(row[0], row[1])
        handles[:] = [loop.call_later(progress.every, show)]

    handles.append(loop.call_later(progress.every, show))
    try:
        return await run_worker(plan, row)
    finally:
        for h in handles:
            h.cancel()
        progress.end()
