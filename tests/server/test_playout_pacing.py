"""Outbound pacing on virtual time: 160-byte frames at real-time pace with a small lead, marks, clear."""

from __future__ import annotations

import asyncio

import pytest

from ivr.playout import FRAME_BYTES, Playout
from telephony.events import Clear, Mark, PlayAudio


class VirtualClock:
    """Time advances only when the pacer sleeps: tests run instantly and deterministically."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def run_until(predicate, timeout_steps: int = 100_000) -> None:
    for _ in range(timeout_steps):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_frames_are_whole_160_bytes_paced_at_real_time_with_a_mark_after_each_chunk():
    clock = VirtualClock()
    sent: list[tuple[float, object]] = []

    async def send(cmd):
        sent.append((clock.now, cmd))

    playout = Playout(send, lead_ms=100, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(playout.run())
    turn = playout.begin_turn("greeting")
    playout.enqueue(turn, b"\x10" * (FRAME_BYTES * 50 + 37))  # a sentence of 1.0 s plus a ragged tail
    playout.enqueue(turn, b"\x20" * (FRAME_BYTES * 25))
    await run_until(lambda: sum(isinstance(c, Mark) for _, c in sent) == 2)
    task.cancel()

    media = [(t, c) for t, c in sent if isinstance(c, PlayAudio)]
    assert all(len(c.payload) == FRAME_BYTES for _, c in media)
    assert len(media) == 51 + 25
    assert media[50][1].payload.endswith(b"\xff" * (FRAME_BYTES - 37))  # padded with mu-law silence, not zeros
    # Never more than the lead ahead of real time: frame n leaves no earlier than n*20 ms - 100 ms.
    t0 = media[0][0]
    for n, (t, _) in enumerate(media):
        assert t - t0 >= n * 0.020 - 0.100 - 1e-9
        assert t - t0 <= n * 0.020 + 1e-9
    kinds = [type(c).__name__ for _, c in sent]
    assert kinds.index("Mark") == 51  # the first mark right after the first chunk's frames


async def test_clear_empties_the_queue_within_one_frame_and_reports_the_cut():
    clock = VirtualClock()
    sent: list[tuple[float, object]] = []

    async def send(cmd):
        sent.append((clock.now, cmd))

    playout = Playout(send, lead_ms=100, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(playout.run())
    turn = playout.begin_turn("menu")
    playout.enqueue(turn, b"\x10" * (FRAME_BYTES * 250))  # 5 s
    await run_until(lambda: sum(isinstance(c, PlayAudio) for _, c in sent) >= 60)
    cut = await playout.clear()
    cleared_at = clock.now
    await asyncio.sleep(0)
    for _ in range(50):
        await clock.sleep(0.02)
    task.cancel()

    assert isinstance(sent[-1][1], Clear) or all(
        not isinstance(c, PlayAudio) or t <= cleared_at + 0.020 for t, c in sent
    )
    after = [c for t, c in sent if t > cleared_at and isinstance(c, PlayAudio)]
    assert after == []
    assert playout.queued_frames == 0
    assert cut is not None and cut.label == "menu"
    # About 60 frames were sent and ~5 (the lead) were still buffered at the carrier when cut.
    assert 50 <= cut.played_frames <= 60
    assert cut.total_frames == 250


async def test_marks_sent_before_a_clear_count_as_flushed_not_played():
    clock = VirtualClock()
    sent: list[object] = []

    async def send(cmd):
        sent.append(cmd)

    playout = Playout(send, lead_ms=100, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(playout.run())
    turn = playout.begin_turn("x")
    playout.enqueue(turn, b"\x10" * FRAME_BYTES * 2)
    await run_until(lambda: any(isinstance(c, Mark) for c in sent))
    mark = next(c for c in sent if isinstance(c, Mark))
    await playout.clear()
    task.cancel()
    assert playout.on_mark(mark.name) is False
    assert mark.name in playout.marks_flushed


@pytest.mark.parametrize(
    ("heard", "backchannel"),
    [
        ("", True),
        ("Uh-huh.", True),
        ("Okay.", True),
        ("Mm-hmm", True),
        ("I see.", True),
        ("Yeah, right.", True),
        ("Yes.", False),
        ("No.", False),
        ("Where is my parcel?", False),
        ("Okay, I want an agent.", False),
        ("uh huh okay yeah", False),
    ],
)
def test_backchannels_are_told_apart_from_answers(heard, backchannel):
    from ivr.dialogue import is_backchannel

    assert is_backchannel(heard) is backchannel


async def test_chunks_of_whole_frames_keep_the_carrier_a_lead_ahead_and_a_clear_lets_the_next_reply_go_at_once():
    clock = VirtualClock()
    sent: list[tuple[float, object]] = []

    async def send(cmd):
        sent.append((clock.now, cmd))

    playout = Playout(send, lead_ms=400, chunk_ms=100, clock=clock, sleep=clock.sleep)
    task = asyncio.create_task(playout.run())
    turn = playout.begin_turn("menu")
    playout.enqueue(turn, b"\x10" * (FRAME_BYTES * 150))  # 3 s
    await run_until(lambda: sum(isinstance(c, PlayAudio) for _, c in sent) >= 10)

    media = [(t, c) for t, c in sent if isinstance(c, PlayAudio)]
    assert [len(c.payload) for _, c in media[:10]] == [FRAME_BYTES * 5] * 10  # 100 ms a message
    t0, played = media[0][0], 0.0
    for t, c in media:  # the carrier never holds more than the lead, and is topped up before it runs low
        assert played - (t - t0) <= 0.400 + 1e-9
        assert played - (t - t0) >= 0.300 - 1e-9 or t == t0 or played < 0.400
        played += len(c.payload) / FRAME_BYTES * 0.020

    # The pacer waits for room in the carrier's buffer; a barge-in's clear ends the wait: the next reply's first
    # chunk goes out at once, not after the rest of the wait.
    cut = await playout.clear()
    cleared_at = clock.now
    nxt = playout.begin_turn("answer")
    playout.enqueue(nxt, b"\x20" * (FRAME_BYTES * 20))
    await run_until(lambda: any(isinstance(c, PlayAudio) and c.payload[:1] == b"\x20" for _, c in sent))
    task.cancel()
    first = next(t for t, c in sent if isinstance(c, PlayAudio) and c.payload[:1] == b"\x20")
    assert first == cleared_at
    assert cut is not None and cut.label == "menu" and cut.total_frames == 150
    assert 50 - 20 <= cut.played_frames <= 50  # 10 chunks sent, up to the lead (20 frames) still buffered
