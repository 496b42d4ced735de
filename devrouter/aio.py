"""Small asyncio helpers shared by the router's background loops."""

from __future__ import annotations

import asyncio


async def sleep_or_stop(stop: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s` or until `stop` is set. Unlike `wait_for(stop.wait(), delay_s)`, a
    cancellation that arrives just as the delay ends is never turned into TimeoutError (and
    lost) on Python 3.11."""
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter}, timeout=delay_s)
    finally:
        waiter.cancel()
