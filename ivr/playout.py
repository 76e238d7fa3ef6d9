"""Outbound audio for one call: a queue of 20 ms mu-law frames sent ahead of real time, a chunk at a time.

Why a lead: Twilio buffers what we send and plays it in order. Sending everything at once would hide how
far playback got (what a barge-in cut, what to resume); sending exactly on time starves the caller's audio
whenever the event loop is late. With `lead_ms` buffered at the carrier, a loop that is late by less than
that is never heard, and a barge-in still stops playback at once (`clear` empties Twilio's buffer).

Why chunks: Twilio plays media of any size. Sent as one message per `chunk_ms` instead of one per 20 ms
frame, a call costs a fifth of the messages (JSON, base64, a socket write and a timer each) on the server
and on the carrier's side; the buffer is topped up to the lead whenever it falls a chunk below it.

A mark follows every piece of audio enqueued (normally a sentence), so Twilio's mark echoes tell us what
has been played; marks echoed after a `clear` mean "flushed", not "played".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telephony.events import Clear, Mark, OutboundCommand, PlayAudio

FRAME_BYTES = 160
FRAME_S = 0.020
FRAME_MS = 20
SILENCE = b"\xff"
MARKS_KEPT = 64

Send = Callable[[OutboundCommand], Awaitable[None]]


@dataclass(slots=True)
class _Frame:
    turn: int
    data: bytes


@dataclass(slots=True)
class _MarkItem:
    turn: int
    name: str


@dataclass(slots=True)
class TurnAudio:
    """One bot turn's progress. Its audio is not kept: a cut resumes from the frames still queued or buffered
    (`Cut.unplayed`), so a call of any length holds only the current turn's unplayed audio."""

    turn: int
    label: str
    frames: int = 0  # queued so far
    frames_sent: int = 0
    first_frame_at: float | None = None
    done: bool = False  # the producer has queued its last chunk


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a `clear` interrupted playback: `unplayed` is every queued or still-buffered frame, in order,
    so an interruption that turns out to be a backchannel can resume exactly where it was cut."""

    turn: int
    label: str
    played_frames: int
    total_frames: int
    unplayed: bytes = b""


class Playout:
    def __init__(
        self,
        send: Send,
        *,
        lead_ms: int = 100,
        chunk_ms: int = FRAME_MS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_sent: Callable[[TurnAudio, int], None] | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
    ) -> None:
        self._send = send
        if not FRAME_MS <= chunk_ms <= lead_ms:
            raise ValueError(f"chunk_ms must be within {FRAME_MS} and lead_ms ({lead_ms}), got {chunk_ms}")
        self._lead = lead_ms / 1000.0
        self._chunk_frames = chunk_ms // FRAME_MS
        self._refill_at = self._lead - self._chunk_frames * FRAME_S  # topped up when this little is left ahead
        self._clock = clock
        self._sleep = sleep
        self._on_sent = on_sent
        self.log = log or logging.getLogger("ivr.playout")
        self._queue: deque[_Frame | _MarkItem] = deque()
        self._wakeup = asyncio.Event()
        self._generation = 0
        self._nap: asyncio.Future[None] | None = None  # the pacing loop's wait for room in the carrier's buffer
        self._play_clock = 0.0  # when the audio already sent will have finished playing
        self._turns: dict[int, TurnAudio] = {}
        self._next_turn = 0
        self._marks_in_flight: dict[str, int] = {}
        # Frames sent but possibly not yet played by the carrier (its buffer is at most the lead).
        self._recent: deque[bytes] = deque(maxlen=max(2, int(self._lead / FRAME_S) + self._chunk_frames + 5))
        self.frames_sent = 0
        # The latest marks only (for diagnostics): a long call must not grow them without bound.
        self.marks_played: deque[str] = deque(maxlen=MARKS_KEPT)
        self.marks_flushed: deque[str] = deque(maxlen=MARKS_KEPT)

    # -- producer side ----------------------------------------------------------------------
    def begin_turn(self, label: str) -> TurnAudio:
        # Turns with nothing left in the queue are done with, but for the latest (it may still be buffered).
        live = {item.turn for item in self._queue}
        if self._turns:
            live.add(max(self._turns))
        for key in [k for k in self._turns if k not in live]:
            del self._turns[key]
        turn = TurnAudio(turn=self._next_turn, label=label)
        self._next_turn += 1
        self._turns[turn.turn] = turn
        return turn

    def enqueue(self, turn: TurnAudio, audio: bytes) -> None:
        """Queues whole frames of a chunk, then a mark; a short tail is padded with mu-law silence."""
        if not audio:
            return
        remainder = len(audio) % FRAME_BYTES
        if remainder:
            audio = audio + SILENCE * (FRAME_BYTES - remainder)
        turn.frames += len(audio) // FRAME_BYTES
        for start in range(0, len(audio), FRAME_BYTES):
            self._queue.append(_Frame(turn.turn, audio[start : start + FRAME_BYTES]))
        name = f"{turn.label}#{turn.turn}:{turn.frames}"
        self._queue.append(_MarkItem(turn.turn, name))
        self._wakeup.set()

    def finish_turn(self, turn: TurnAudio) -> None:
        turn.done = True

    # -- state ------------------------------------------------------------------------------
    @property
    def queued_frames(self) -> int:
        return sum(1 for item in self._queue if isinstance(item, _Frame))

    def ahead_s(self) -> float:
        """Audio queued or already sent that the caller has not heard yet: how soon more is needed."""
        return self.queued_frames * FRAME_S + self.buffered_s()

    def buffered_s(self) -> float:
        """Audio already sent to the carrier and not yet played."""
        return max(0.0, self._play_clock - self._clock())

    @property
    def is_playing(self) -> bool:
        return bool(self._queue) or self.buffered_s() > 0.0

    def on_mark(self, name: str) -> bool:
        """Records a mark echo; returns True if it means 'played' (False: flushed by a clear, or unknown)."""
        if name in self._marks_in_flight:
            del self._marks_in_flight[name]
            self.marks_played.append(name)
            return True
        return False

    # -- clear ------------------------------------------------------------------------------
    async def clear(self) -> Cut | None:
        """Stops playback now: empties our queue and Twilio's. Returns where the current turn was cut."""
        current = self._current_turn()
        buffered_frames = min(int(round(self.buffered_s() / FRAME_S)), len(self._recent))
        buffered = list(self._recent)[len(self._recent) - buffered_frames :] if buffered_frames else []
        queued = [item.data for item in self._queue if isinstance(item, _Frame)]
        unplayed = b"".join(buffered) + b"".join(queued)
        self._generation += 1
        if self._nap is not None:
            self._nap.cancel()
        self._queue.clear()
        self._recent.clear()
        self._play_clock = self._clock()
        self.marks_flushed.extend(self._marks_in_flight)
        self._marks_in_flight.clear()
        await self._send(Clear())
        if current is None:
            return None
        played = max(0, current.frames_sent - buffered_frames)
        return Cut(current.turn, current.label, played, current.frames, unplayed)

    def turn(self, turn_id: int) -> TurnAudio | None:
        return self._turns.get(turn_id)

    def forget_turns_before(self, turn_id: int) -> None:
        for key in [k for k in self._turns if k < turn_id]:
            del self._turns[key]

    def _current_turn(self) -> TurnAudio | None:
        for item in self._queue:
            return self._turns.get(item.turn)
        # Nothing queued: the turn still playing from Twilio's buffer, if any.
        if self.buffered_s() > 0 and self._turns:
            return self._turns[max(self._turns)]
        return None

    # -- the pacing loop --------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue[0]
            generation = self._generation
            if isinstance(item, _Frame):
                ahead = self._play_clock - self._clock()
                if ahead > self._refill_at:
                    # A clear ends the wait at once: the next reply's first chunk must not wait for it.
                    self._nap = asyncio.ensure_future(self._sleep(ahead - self._refill_at))
                    try:
                        await asyncio.wait([self._nap])
                    finally:
                        self._nap.cancel()  # this loop cancelled (the call ended): no wait outlives it
                        self._nap = None
                    if generation != self._generation:
                        continue  # a clear happened while we waited: these frames are gone
                # Up to the lead, in chunks: whatever is queued of this turn's audio up to the next mark.
                room = max(1, round((self._lead - max(0.0, self._play_clock - self._clock())) / FRAME_S))
                frames: list[bytes] = []
                while self._queue and len(frames) < min(room, self._chunk_frames):
                    head = self._queue[0]
                    if not isinstance(head, _Frame) or head.turn != item.turn:
                        break
                    frames.append(head.data)
                    self._queue.popleft()
                now = self._clock()
                self._play_clock = max(self._play_clock, now) + len(frames) * FRAME_S
                await self._send(PlayAudio(b"".join(frames)))
                self._recent.extend(frames)
                self.frames_sent += len(frames)
                turn = self._turns.get(item.turn)
                if turn is not None:
                    turn.frames_sent += len(frames)
                    if turn.first_frame_at is None:
                        turn.first_frame_at = now
                    if self._on_sent is not None:
                        self._on_sent(turn, len(frames))
            else:
                self._queue.popleft()
                self._marks_in_flight[item.name] = item.turn
                await self._send(Mark(item.name))
