"""The turn ledger: what each exchange took, stage by stage, stored with the turn and exported as histograms.

A turn's latency is measured from the caller's last voiced frame to the first frame of our reply:
endpoint_wait (trailing silence), asr, understanding (flow, lookups), tts_first_frame, total. A turn is
written once its reply has started playing, so the stored breakdown is complete; a reply cut before its
first frame (barge-in, hang-up) is written with what was measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flows.context import CallContext
from ivr.call_log import CallLog
from ivr.clock import Clock
from ivr.speech import FirstFrame


@dataclass(frozen=True, slots=True)
class TurnEntry:
    idx: int
    channel: str
    text: str
    intent: str | None
    confidence: float | None
    sentiment: float | None
    loudness_spl_db: float | None
    reply: str


@dataclass(slots=True)
class TurnTiming:
    last_voiced_at: float
    stages: dict[str, float] = field(default_factory=dict)
    understanding_started: float | None = None
    reply_requested_at: float | None = None
    first_frame_seen: bool = False
    rows: list[TurnEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HowSaid:
    """How the caller sounded on the turn being answered."""

    sentiment: float | None = None
    loudness_spl_db: float | None = None


class TurnLedger:
    def __init__(self, call: CallLog, clock: Clock) -> None:
        self._call = call
        self._clock = clock
        self._started_at: float | None = None
        self._how_said = HowSaid()
        self._unwritten: list[TurnTiming] = []

    # -- the call -----------------------------------------------------------------------------
    def call_started(self) -> None:
        self._started_at = self._clock.now()

    def first_audio(self, at: float) -> None:
        """The caller heard us for the first time: the call's first-response time."""
        if self._started_at is None:
            return
        first_ms = (at - self._started_at) * 1000
        self._call.metrics.first_greeting.observe(first_ms / 1000)
        if self._call.call_id is not None:
            self._call.db.submit(self._call.db.sync.update_call, self._call.call_id, first_response_ms=first_ms)
        self._call.record("first_frame", {"ms_after_start": round(first_ms, 1)})

    # -- one turn -----------------------------------------------------------------------------
    def speech_heard(self, last_voiced_at: float, endpointed_at: float) -> TurnTiming:
        timing = TurnTiming(last_voiced_at)
        timing.stages["endpoint_wait"] = (endpointed_at - last_voiced_at) * 1000
        return timing

    def keys_heard(self) -> TurnTiming:
        return TurnTiming(self._clock.now())

    def transcribed(self, timing: TurnTiming, asr_s: float, how: HowSaid) -> None:
        timing.stages["asr"] = asr_s * 1000
        self._how_said = how

    def silence_heard(self) -> None:
        self._how_said = HowSaid()

    def understanding(self, timing: TurnTiming) -> None:
        timing.understanding_started = self._clock.now()

    def reply_requested(self, timing: TurnTiming) -> FirstFrame:
        now = self._clock.now()
        if timing.understanding_started is not None:
            timing.stages["understanding"] = (now - timing.understanding_started) * 1000
        timing.reply_requested_at = now

        def on_first_frame(at: float) -> None:
            timing.first_frame_seen = True
            timing.stages["tts_first_frame"] = (at - now) * 1000
            timing.stages["total"] = (at - timing.last_voiced_at) * 1000
            for stage, ms in timing.stages.items():
                self._call.metrics.turn_latency.labels(stage).observe(ms / 1000)
            self._call.record("turn_latency", _rounded(timing.stages))
            if timing.rows:
                self._write(timing)
                if timing in self._unwritten:
                    self._unwritten.remove(timing)

        return on_first_frame

    def store(self, ctx: CallContext, turns_before: int, replies: list[str], timing: TurnTiming | None) -> None:
        """Writes this input's turns; while the reply has not started playing, waits for its first frame."""
        how, self._how_said = self._how_said, HowSaid()
        rows = []
        for turn in ctx.turns[turns_before:]:
            turn.reply = " ".join(replies)
            if turn.sentiment is None:
                turn.sentiment = how.sentiment
            if turn.loudness_spl_db is None:
                turn.loudness_spl_db = how.loudness_spl_db
            self._call.metrics.observe_turn(turn.intent, turn.sentiment)
            rows.append(
                TurnEntry(
                    idx=turn.index,
                    channel=turn.channel,
                    text=turn.text,
                    intent=turn.intent,
                    confidence=turn.confidence,
                    sentiment=turn.sentiment,
                    loudness_spl_db=turn.loudness_spl_db,
                    reply=turn.reply,
                )
            )
        pending = timing if timing is not None else TurnTiming(0.0)
        pending.rows = rows
        if timing is not None and timing.reply_requested_at is not None and not timing.first_frame_seen:
            self._unwritten.append(timing)
        else:
            self._write(pending, latency=timing is not None)

    def flush_unwritten(self) -> None:
        pending, self._unwritten = self._unwritten, []
        for timing in pending:
            self._write(timing)

    def _write(self, timing: TurnTiming, *, latency: bool = True) -> None:
        rounded = _rounded(timing.stages) if latency else {}
        db, call_id = self._call.db, self._call.call_id
        if call_id is None:
            return
        for row in timing.rows:
            db.submit(db.sync.add_turn, call_id, latency=rounded, **asdict(row))
        timing.rows = []


def _rounded(stages: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in stages.items()}
