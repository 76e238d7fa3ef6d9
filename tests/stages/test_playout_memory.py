"""Per-call memory of outbound audio over a long call: the pacer keeps what a resume needs (the current turn's
unplayed audio), not every frame it has played."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import ivr.playout
from ivr.playout import FRAME_BYTES, Playout


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def _play_turns(playout: Playout, clock: VirtualClock, turns: int, seconds: float) -> None:
    for n in range(turns):
        turn = playout.begin_turn(f"reply{n}")
        playout.enqueue(turn, bytes([n % 200]) * int(seconds / 0.020) * FRAME_BYTES)
        playout.finish_turn(turn)
        while playout.is_playing:
            await clock.sleep(0.1)
            await asyncio.sleep(0)


def _held_by_playout(snapshot: tracemalloc.Snapshot) -> int:
    where = tracemalloc.Filter(True, str(Path(ivr.playout.__file__)))
    return sum(stat.size for stat in snapshot.filter_traces([where]).statistics("filename"))


async def test_audio_held_after_many_turns_is_no_more_than_after_a_few():
    clock = VirtualClock()
    sent = 0

    async def send(cmd: object) -> None:
        nonlocal sent
        sent += 1

    playout = Playout(send, lead_ms=100, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(playout.run())
    tracemalloc.start()
    try:
        await _play_turns(playout, clock, 5, 4.0)
        after_few = _held_by_playout(tracemalloc.take_snapshot())
        await _play_turns(playout, clock, 60, 4.0)  # four minutes of replies
        after_many = _held_by_playout(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        task.cancel()
    assert sent > 60 * 200  # every frame went out
    # Sixty more turns of 32 kB each would be ~2 MB if played audio were kept.
    assert after_many <= after_few + 64 * 1024
