"""Percentiles and the per-recording utterance count: plain numbers, no I/O."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

import numpy as np

FRAME_S = 0.020


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def latency_ms(values_s: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95, p99 and max in milliseconds of latencies given in seconds."""
    if not values_s:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values_s),
        "p50_ms": round(percentile(values_s, 50) * 1000, 1),
        "p95_ms": round(percentile(values_s, 95) * 1000, 1),
        "p99_ms": round(percentile(values_s, 99) * 1000, 1),
        "max_ms": round(max(values_s) * 1000, 1),
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def count_splits(record: dict[str, Any], plays: list[tuple[str, float, int]], silence_ms: int) -> list[int]:
    """Utterances the endpointer found in each spoken recording (1 is right; 2+ means it was split).

    An utterance's `end_frame` is its last voiced inbound frame; the caller sends one frame every 20 ms from
    the start, so a recording played at t covers frames t/0.02 .. t/0.02 + its length.
    """
    ends = [e["data"]["end_frame"] for e in record.get("events", []) if e["kind"] == "utterance"]
    counts = []
    slack = 10
    for _, t, frames in plays:
        first = int(t / FRAME_S)
        last = first + frames + silence_ms // 20
        counts.append(sum(1 for f in ends if first - slack <= f <= last + slack))
    return counts


class LoopLag:
    """How late a 10 ms sleep wakes up in an event loop (the server's: every stall a call's audio would feel; a
    caller process's: how late it stamps what it hears)."""

    def __init__(self, interval_s: float = 0.010) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        # perf_counter, not the loop's clock: uvloop's counts whole milliseconds, read once per loop iteration.
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, time.perf_counter() - t - self.interval_s))

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.ensure_future(self._tick())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return lag_summary(self.samples)


def lag_summary(samples: list[float]) -> dict[str, float]:
    """Max, p99 and median of `LoopLag` samples, in ms."""
    s = samples
    return {
        "max_ms": round(max(s) * 1000, 1) if s else 0.0,
        "p99_ms": round(percentile(s, 99) * 1000, 1) if s else 0.0,
        "median_ms": round(statistics.median(s) * 1000, 2) if s else 0.0,
    }
