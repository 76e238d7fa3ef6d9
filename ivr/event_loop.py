"""The event loop a server process runs on: uvloop by default, the standard library's on request.

Every caller's 20 ms frame is a socket read, a WebSocket message and a few callbacks on the one loop that also
paces every reply, so the loop's own overhead is paid 50 times a second per call. uvloop (libuv) does that
work for less CPU: the server process used 5-15% less CPU than on asyncio's loop, the same code side by side
at 40 and 60 simulated callers (`IVR_EVENT_LOOP=asyncio|uvloop python -m bench --levels 40,60 --no-extras`,
two rounds; README), and the simulated callers' processes 8-11% less.
uvloop's clock (`loop.time()`, which `ivr.clock.LoopClock` reads) counts whole milliseconds, so the turn
stages in records and metrics do too. `Settings.event_loop = "asyncio"` (``IVR_EVENT_LOOP``) is the way back,
e.g. where uvloop does not build.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

EventLoopKind = Literal["uvloop", "asyncio"]

T = TypeVar("T")


def loop_factory(kind: EventLoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop of `kind` (None: asyncio's default)."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:  # no wheel for this platform (Windows): say how to go on
        raise RuntimeError("uvloop is not installed here: set IVR_EVENT_LOOP=asyncio to run on asyncio's loop") from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], kind: EventLoopKind) -> T:
    """`asyncio.run(main)` on a loop of `kind`."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)
