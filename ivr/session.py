"""One call, one `CallSession`: it owns the call's tasks, context, audio state and outbound queue.

Frames travel one way. `on_message` turns a carrier frame into a typed event; caller audio goes
through `audio.caller.CallerAudio` (decode, VAD, endpointing, loudness, silence) in microseconds per
frame; finished utterances, keypad digits and long silences become inputs for the dialogue task,
which runs ASR off the loop, asks the flow engine what to do, and hands replies to the speech task,
which synthesises sentence by sentence into the `Playout` pacer. Nothing slow ever runs in the
frame path, so one call's ASR never stalls another call's audio.

Every task of the call is a child of the session: `close()` cancels them all and closes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from audio.caller import CallerAudio, CallerAudioConfig
from audio.endpoint import EndpointerConfig, SpeechDiscarded, SpeechEnded, SpeechStarted
from audio.resample import resample
from flows.actions import Escalate, Hangup, Listen, OfferCallback, Say, SetFlag
from flows.context import CallContext, Turn
from flows.engine import CallerInput
from ivr.playout import Cut, Playout, TurnAudio
from ivr.services import ASR_RETRY, HOLD_REMINDER, Services
from models.asr import AsrOverloaded, Transcript
from models.speech_text import normalize_for_speech, split_sentences
from telephony.events import (
    AudioIn,
    CallEnded,
    CallStarted,
    Connected,
    DtmfIn,
    InboundEvent,
    MarkPlayed,
    OutboundCommand,
    ProtocolError,
)
from telephony.twilio import TwilioSerializer
from telephony.twiml import is_valid_stream_token

log = logging.getLogger("ivr.session")

# Words of an acknowledgement that does not take the turn ("uh-huh", "okay", "right", "I see", "got it").
BACKCHANNEL_WORDS = frozenset(
    {
        "uh",
        "huh",
        "uh-huh",
        "mm",
        "hmm",
        "mhm",
        "mm-hmm",
        "hm",
        "um",
        "oh",
        "ah",
        "aha",
        "okay",
        "ok",
        "right",
        "yeah",
        "yep",
        "sure",
        "alright",
        "all",
        "i",
        "see",
        "got",
        "it",
        "cool",
        "great",
    }
)
_WORDS = re.compile(r"[^a-z\- ]+")


def is_backchannel(text: str) -> bool:
    """True for a short acknowledgement (or nothing intelligible) rather than an answer or a request."""
    words = _WORDS.sub(" ", text.lower()).split()
    return len(words) <= 3 and set(words) <= BACKCHANNEL_WORDS


MASK = "[masked]"


class Transport(Protocol):
    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, message: str) -> None: ...


@dataclass(slots=True)
class Utterance:
    audio: np.ndarray
    last_voiced_at: float
    endpointed_at: float
    duration_s: float
    spl_db: float | None
    during_playback: bool


@dataclass(slots=True)
class Digits:
    digits: str


@dataclass(slots=True)
class LongSilence:
    pass


@dataclass(slots=True)
class SpeechJob:
    text: str
    prompt_id: str | None = None
    prefix_audio: bytes = b""  # resumed audio of an interrupted turn
    sentences: list[str] = field(default_factory=list)  # filled when synthesis starts
    sentences_done: int = 0
    label: str = "say"
    on_first_frame: Callable[[float], None] | None = None


@dataclass(slots=True)
class TurnTiming:
    """Latency breakdown of one turn in ms (endpoint_wait, asr, understanding, tts_first_frame, total),
    stored with the turn and exported as histograms."""

    last_voiced_at: float
    stages: dict[str, float] = field(default_factory=dict)
    reply_requested_at: float | None = None
    understanding_started: float | None = None
    first_frame_seen: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


class CallSession:
    def __init__(
        self,
        services: Services,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.metrics = services.metrics
        self.transport = transport
        self.clock = clock
        self.serializer = TwilioSerializer()
        self.call_sid: str | None = None
        self.stream_sid: str | None = None
        self.ctx: CallContext | None = None
        self.nlu = services.new_nlu()
        self.log: logging.LoggerAdapter = logging.LoggerAdapter(log, {"call_sid": "-"})
        self.started_at: float | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._inputs: asyncio.Queue[Utterance | Digits | LongSilence] = asyncio.Queue()
        self._speech_jobs: asyncio.Queue[SpeechJob] = asyncio.Queue()
        self._speech_task: asyncio.Task[None] | None = None
        self._last_seq = 0
        self._listen: Listen = Listen(mode="both")
        self._digit_buffer = ""
        self._digit_timer: asyncio.TimerHandle | None = None
        self._interrupted: tuple[Cut, list[SpeechJob]] | None = None
        self._current_job: SpeechJob | None = None
        self._last_voiced_at = 0.0
        self._speech_start_at: float | None = None
        self._barged_in = False
        self._first_frame_logged = False
        self._outcome: str | None = None
        self._first_frame_waiters: dict[int, Callable[[float], None]] = {}
        self._pending_turn_extra: dict[str, Any] = {}
        self._unwritten_turns: list[TurnTiming] = []
        self._last_hold_reminder = float("-inf")
        self.transferring = False  # an agent accepted the call; the carrier's `stop` is the transfer
        self.audio = CallerAudio(
            CallerAudioConfig(
                vad_aggressiveness=self.settings.audio.vad_aggressiveness,
                endpoint=EndpointerConfig(
                    speech_start_ms=self.settings.audio.speech_start_ms,
                    silence_ms=self.settings.audio.endpoint_silence_ms,
                    min_speech_ms=self.settings.audio.min_speech_ms,
                    max_utterance_s=self.settings.audio.max_utterance_s,
                ),
                loudness_calibration_db=self.settings.audio.loudness_calibration_db,
                long_silence_s=self.settings.audio.long_silence_s,
            )
        )
        self.playout = Playout(
            self._send,
            lead_ms=self.settings.audio.outbound_lead_ms,
            clock=clock,
            on_frame=self._on_frame_sent,
            log=self.log,
        )

    # == inbound =================================================================================
    async def on_message(self, raw: str | bytes) -> None:
        """One WebSocket message from the carrier. Bad input is logged, counted and dropped."""
        try:
            event = self.serializer.deserialize(raw)
        except ProtocolError as exc:
            self.error(exc.kind, str(exc))
            if exc.kind == "unsupported_media_format":
                await self.close("unsupported_media_format", outcome="error")
            return
        await self.on_event(event)

    async def on_event(self, event: InboundEvent) -> None:
        if self.ended.is_set():
            return
        if isinstance(event, AudioIn):
            self._on_audio(event)
        elif isinstance(event, DtmfIn):
            await self._on_dtmf(event)
        elif isinstance(event, MarkPlayed):
            if self._check_sequence(event.sequence_number):
                played = self.playout.on_mark(event.name)
                if played and not self.playout.is_playing:
                    self.audio.quiet()
        elif isinstance(event, CallStarted):
            await self._on_start(event)
        elif isinstance(event, CallEnded):
            if self.stream_sid is None:
                reason = "stop_before_start"
            else:
                reason = "transferred_to_agent" if self.transferring else "caller_hung_up"
            await self.close(reason)
        elif isinstance(event, Connected):
            pass

    def _check_sequence(self, seq: int | None) -> bool:
        if seq is None:
            return True
        if seq <= self._last_seq:
            self.error("out_of_order", f"sequenceNumber {seq} after {self._last_seq}: dropped")
            return False
        if seq > self._last_seq + 1 and self._last_seq:
            self.error("sequence_gap", f"sequenceNumber jumped from {self._last_seq} to {seq}")
        self._last_seq = seq
        return True

    async def _on_start(self, event: CallStarted) -> None:
        if self.stream_sid is not None:
            self.error("duplicate_start", "a second start on one stream was ignored")
            return
        self.log = logging.LoggerAdapter(log, {"call_sid": event.call_sid})
        self.playout.log = self.log
        self.call_sid = event.call_sid
        token_secret = self.settings.twilio_auth_token
        if token_secret and not self.settings.insecure_dev:
            if not is_valid_stream_token(token_secret, event.call_sid, event.custom_parameters.get("token")):
                self.error("bad_stream_token", "start without a valid per-call token: stream refused")
                await self.close("bad_stream_token", outcome="error", record=False)
                return
        self.stream_sid = event.stream_sid
        self._last_seq = event.sequence_number
        self.started_at = self.clock()
        params = {k: v for k, v in event.custom_parameters.items() if k != "token"}
        caller = params.get("From") or params.get("Caller")
        services = self.services
        ctx = services.contexts.pop(event.call_sid, None)  # back from an agent: keep everything
        if ctx is None:
            ctx = CallContext(
                call_sid=event.call_sid,
                caller=caller,
                region=services.region.name,
                industry=services.flow.industry,
            )
        self.ctx = ctx
        services.sessions[event.call_sid] = self
        self.metrics.calls_total.inc()
        self.metrics.active_calls.inc()
        services.db.submit(
            services.db.sync.start_call,
            event.call_sid,
            stream_sid=event.stream_sid,
            caller=caller,
            params=params,
            region=services.region.name,
            flow=services.flow.name,
        )
        self.record(
            "start", {"stream_sid": event.stream_sid, "tracks": list(event.tracks), "returning": bool(ctx.turns)}
        )
        self.log.info("call started from %s (stream %s)", _mask_number(caller), event.stream_sid)
        self._spawn(self.playout.run(), "playout")
        self._speech_task = self._spawn(self._speech_loop(), "speech")
        self._spawn(self._dialogue(), "dialogue")

    def _on_audio(self, event: AudioIn) -> None:
        if self.stream_sid is None:
            self.error("media_before_start", "media before start: dropped")
            return
        if not self._check_sequence(event.sequence_number):
            return
        if event.track not in ("inbound", "inbound_track"):
            return
        self.metrics.frames_in.inc()
        for frame in self.audio.frames(event.payload):
            result = self.audio.process(frame)
            now = self.clock()
            if result.voiced:
                self._last_voiced_at = now
            for ev in result.events:
                if isinstance(ev, SpeechStarted):
                    self._speech_start_at = now
                    self._barged_in = False
                elif isinstance(ev, SpeechEnded):
                    self._on_utterance(ev, now)
                elif isinstance(ev, SpeechDiscarded):
                    self.record("noise_discarded", {"voiced_ms": ev.voiced_ms})
            if (
                self.audio.endpointer.in_speech
                and not self._barged_in
                and self.playout.is_playing
                and self.audio.endpointer.voiced_run_ms >= self.settings.audio.barge_in_ms
            ):
                self._barged_in = True
                self._spawn(self._interrupt("speech"), "barge-in")
            if self.playout.is_playing:
                self.audio.quiet()
            elif result.long_silence:
                self._inputs.put_nowait(LongSilence())

    def _on_utterance(self, ev: SpeechEnded, now: float) -> None:
        self.record(
            "utterance",
            {
                "duration_s": round(ev.duration_s, 3),
                "voiced_ms": ev.voiced_ms,
                "end_frame": ev.frame_index,
                "reason": ev.reason,
                "during_playback": self._barged_in,
            },
        )
        if self._listen.pci:
            # Card digits are keypad-only: what the caller says now is neither transcribed nor kept.
            self.record("speech_ignored_pci", {"duration_s": round(ev.duration_s, 2)})
            return
        self._inputs.put_nowait(
            Utterance(
                audio=ev.audio,
                last_voiced_at=self._last_voiced_at,
                endpointed_at=now,
                duration_s=ev.duration_s,
                spl_db=self.audio.utterance_peak_spl,
                during_playback=self._barged_in,
            )
        )

    async def _on_dtmf(self, event: DtmfIn) -> None:
        if self.stream_sid is None:
            self.error("dtmf_before_start", "dtmf before start: dropped")
            return
        if not self._check_sequence(event.sequence_number):
            return
        self.record("dtmf", {"digit": "*" if self._listen.pci else event.digit})
        if self.playout.is_playing:
            await self._interrupt("dtmf", resumable=False)
        listen = self._listen
        multi = bool(listen.slot) or (listen.max_digits or 1) > 1
        if not multi:
            self._inputs.put_nowait(Digits(event.digit))
            return
        if event.digit == listen.finish_on:
            self._flush_digits()
            return
        self._digit_buffer += event.digit
        if listen.max_digits and len(self._digit_buffer) >= listen.max_digits:
            self._flush_digits()
            return
        if self._digit_timer:
            self._digit_timer.cancel()
        self._digit_timer = asyncio.get_running_loop().call_later(5.0, self._flush_digits)

    def _flush_digits(self) -> None:
        if self._digit_timer:
            self._digit_timer.cancel()
            self._digit_timer = None
        digits, self._digit_buffer = self._digit_buffer, ""
        self._inputs.put_nowait(Digits(digits))

    # == barge-in ================================================================================
    async def _interrupt(self, kind: str, *, resumable: bool = True) -> None:
        """Stops the bot mid-sentence: clear Twilio's buffer and ours, stop synthesis.

        What was not heard yet is kept (audio already made, sentences not yet synthesised, later replies),
        so a backchannel or a cough can resume the turn where it was cut.
        """
        pending: list[SpeechJob] = []
        while not self._speech_jobs.empty():
            pending.append(self._speech_jobs.get_nowait())
            self._speech_jobs.task_done()
        job = self._current_job
        unsynthesised = job.sentences[job.sentences_done :] if job is not None else []
        if self._speech_task is not None and not self._speech_task.done():
            self._speech_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._speech_task
        cut = await self.playout.clear()
        self._first_frame_waiters.clear()
        self._flush_unwritten_turns()
        self._speech_task = self._spawn(self._speech_loop(), "speech")
        self.metrics.barge_ins.labels(kind).inc()
        self.record("barge_in", {"kind": kind, "played_frames": cut.played_frames if cut else None})
        resume: list[SpeechJob] = []
        if cut is not None and (cut.unplayed or unsynthesised):
            resume.append(SpeechJob(text="", prefix_audio=cut.unplayed, sentences=unsynthesised, label="resume"))
        self._interrupted = (cut, resume + pending) if resumable and (resume or pending) else None

    def _resume_if_backchannel(self, text: str) -> bool:
        """A cough, click or "uh-huh" does not end the bot's turn: replay from where it was cut."""
        if self._interrupted is None:
            return False
        if not is_backchannel(text):
            self._interrupted = None
            return False
        _, jobs = self._interrupted
        self._interrupted = None
        for job in jobs:
            self._speech_jobs.put_nowait(job)
        self.record("resumed_after_backchannel", {"heard": text})
        return True

    # == dialogue ================================================================================
    async def _dialogue(self) -> None:
        assert self.ctx is not None
        engine = self.services.new_engine(self.nlu, self.log)
        await self._run_actions(engine.start(self.ctx), None)
        while not self.ended.is_set():
            item = await self._inputs.get()
            timing: TurnTiming | None = None
            if isinstance(item, Utterance):
                timing = TurnTiming(item.last_voiced_at)
                timing.stages["endpoint_wait"] = (item.endpointed_at - item.last_voiced_at) * 1000
                transcript = await self._transcribe(item)
                if transcript is None:
                    continue
                timing.stages["asr"] = transcript.asr_s * 1000
                text = transcript.text.strip()
                if self._resume_if_backchannel(text):
                    continue
                if not text:
                    self.record("empty_transcript", {"duration_s": round(item.duration_s, 2)})
                    continue
                self._score_sentiment(text, item.spl_db)
                inp = CallerInput(kind="speech", text=text, asr_confidence=transcript.confidence)
            elif isinstance(item, Digits):
                self._interrupted = None
                timing = TurnTiming(self.clock())
                inp = CallerInput(kind="dtmf", digits=item.digits)
            else:
                if self.playout.is_playing:
                    continue
                self._score_silence()
                inp = CallerInput(kind="silence")
            if timing is not None:
                timing.understanding_started = self.clock()
            if self.ctx.escalated:
                # On hold for a person: the flow is done; keep the caller company without repeating ourselves.
                if self.clock() - self._last_hold_reminder > 15.0:
                    self._last_hold_reminder = self.clock()
                    self.say(HOLD_REMINDER, prompt_id="hold_reminder")
                continue
            # Signals from how the caller speaks (legal words, shouting, anger, a frustrated VIP) are checked
            # before the flow answers: the caller should not get another menu first.
            guess = self.nlu.classify(inp.text) if inp.kind == "speech" else None
            decision = self.services.policy_check(self.ctx, last_intent=guess.intent if guess else None)
            if decision is not None:
                if guess is not None:
                    self._record_turn_for_policy(inp.text, guess)
                await self._escalate(decision)
                continue
            await self._run_actions(engine.handle(self.ctx, inp), timing)

    def _record_turn_for_policy(self, text: str, guess: Any) -> None:
        """The flow never sees this input, so the turn (with its intent guess) is recorded here."""
        assert self.ctx is not None
        turns_before = len(self.ctx.turns)
        self.ctx.turns.append(
            Turn(index=turns_before, channel="voice", text=text, intent=guess.intent, confidence=guess.confidence)
        )
        self._store_turns(turns_before, [], None)

    async def _transcribe(self, item: Utterance) -> Transcript | None:
        audio16 = resample(item.audio.astype(np.float32) / 32768.0, 8000, 16000)
        try:
            return await self.services.asr.transcribe(audio16, self.call_sid or "-")
        except AsrOverloaded as exc:
            self.error("asr_overloaded", str(exc))
            self.say(ASR_RETRY, prompt_id="asr_retry")
        except Exception as exc:  # noqa: BLE001 - a model failure must not end the call silently
            self.error("asr_failed", f"{type(exc).__name__}: {exc}")
            self.say(ASR_RETRY, prompt_id="asr_retry")
        return None

    def _score_sentiment(self, text: str, spl_db: float | None) -> None:
        assert self.ctx is not None
        result = self.services.sentiment.score(text)
        self.ctx.last_loudness_spl_db = spl_db
        self.services.frustration.update(self.ctx, result, loudness_spl_db=spl_db)
        self._pending_turn_extra = {"sentiment": result.compound, "loudness_spl_db": spl_db}

    def _score_silence(self) -> None:
        assert self.ctx is not None
        self.services.frustration.update(self.ctx, self.services.sentiment.score(""), long_silence=True)
        self._pending_turn_extra = {}

    async def _run_actions(self, actions: Any, timing: TurnTiming | None) -> None:
        assert self.ctx is not None
        turns_before = len(self.ctx.turns)
        replies: list[str] = []
        first_say = True
        try:
            async for action in actions:
                if isinstance(action, Say):
                    replies.append(action.text)
                    callback = None
                    if first_say and timing is not None:
                        now = self.clock()
                        if timing.understanding_started is not None:
                            timing.stages["understanding"] = (now - timing.understanding_started) * 1000
                        timing.reply_requested_at = now
                        callback = self._turn_latency_callback(timing)
                    first_say = False
                    self.say(action.text, prompt_id=action.prompt_id, on_first_frame=callback)
                elif isinstance(action, Listen):
                    self._listen = action
                    self._digit_buffer = ""
                elif isinstance(action, Escalate):
                    decision = self.services.policy_from_flow(self.ctx, action)
                    await self._escalate(decision)
                    return
                elif isinstance(action, OfferCallback):
                    self.record("callback_offered", {"reason": action.reason})
                elif isinstance(action, Hangup):
                    await self._finish(action.reason)
                    return
                elif isinstance(action, SetFlag):
                    self.record("flag", {"name": action.name})
        finally:
            self._store_turns(turns_before, replies, timing)

    def _store_turns(self, turns_before: int, replies: list[str], timing: TurnTiming | None) -> None:
        """Writes this input's turns; while the reply has not started playing, waits for its first frame
        so the stored latency breakdown is complete."""
        assert self.ctx is not None
        extra, self._pending_turn_extra = self._pending_turn_extra, {}
        rows = []
        for turn in self.ctx.turns[turns_before:]:
            turn.reply = " ".join(replies)
            if turn.sentiment is None and "sentiment" in extra:
                turn.sentiment = extra["sentiment"]
            if turn.loudness_spl_db is None:
                turn.loudness_spl_db = extra.get("loudness_spl_db")
            rows.append(
                dict(
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
        if timing is None:
            self._write_turns(rows, {})
        elif timing.reply_requested_at is not None and not timing.first_frame_seen:
            timing.rows = rows
            self._unwritten_turns.append(timing)
        else:
            self._write_turns(rows, timing.stages)

    def _write_turns(self, rows: list[dict[str, Any]], latency: dict[str, float]) -> None:
        rounded = {k: round(v, 1) for k, v in latency.items()}
        for row in rows:
            self.services.db.submit(self.services.db.sync.add_turn, self.call_sid, latency=rounded, **row)

    def _flush_unwritten_turns(self) -> None:
        """A reply cut before its first frame (barge-in, hang-up): store the turns with what was measured."""
        pending, self._unwritten_turns = self._unwritten_turns, []
        for timing in pending:
            self._write_turns(timing.rows, timing.stages)
            timing.rows = []

    def _turn_latency_callback(self, timing: TurnTiming) -> Callable[[float], None]:
        def on_first_frame(at: float) -> None:
            timing.first_frame_seen = True
            if timing.reply_requested_at is not None:
                timing.stages["tts_first_frame"] = (at - timing.reply_requested_at) * 1000
            timing.stages["total"] = (at - timing.last_voiced_at) * 1000
            for stage, ms in timing.stages.items():
                self.metrics.turn_latency.labels(stage).observe(ms / 1000)
            self.record("turn_latency", {k: round(v, 1) for k, v in timing.stages.items()})
            if timing.rows:
                self._write_turns(timing.rows, timing.stages)
                timing.rows = []
                if timing in self._unwritten_turns:
                    self._unwritten_turns.remove(timing)

        return on_first_frame

    # == escalation ==============================================================================
    async def _escalate(self, decision: Any) -> None:
        assert self.ctx is not None and self.call_sid is not None
        if self.ctx.escalated:
            return
        self.ctx.escalated = True
        self._outcome = "escalated"
        await self.services.escalate(self, decision)

    async def _finish(self, reason: str) -> None:
        """The flow ended the call: let the goodbye play out, then hang up."""
        assert self.ctx is not None
        if self.ctx.flags.get("callback_requested") and self.services.callbacks is not None and self.ctx.caller:
            # The caller chose a callback over waiting (a backend was down): text the booking link now.
            self._outcome = "callback"
            try:
                await self.services.callbacks.request(
                    self.call_sid or "-",
                    self.ctx.caller,
                    self.ctx.customer.customer_id if self.ctx.customer else None,
                    {"reason": str(self.ctx.flags["callback_requested"])},
                )
            except Exception as exc:  # noqa: BLE001 - the goodbye still plays; the failure is on record
                self.error("callback_sms_failed", f"{type(exc).__name__}: {exc}")
        await self._speech_jobs.join()
        deadline = self.clock() + 30
        while self.playout.is_playing and self.clock() < deadline:
            await asyncio.sleep(0.05)
        await self.close(f"bot_hangup: {reason}")

    # == speaking ================================================================================
    def say(
        self, text: str, *, prompt_id: str | None = None, on_first_frame: Callable[[float], None] | None = None
    ) -> None:
        self._speech_jobs.put_nowait(SpeechJob(text=text, prompt_id=prompt_id, on_first_frame=on_first_frame))

    async def _speech_loop(self) -> None:
        tts = self.services.tts
        while True:
            job = await self._speech_jobs.get()
            self._current_job = job
            try:
                turn = self.playout.begin_turn(job.label)
                turn_first = job.on_first_frame
                if turn_first is not None:
                    self._first_frame_waiters[turn.turn] = turn_first
                if job.prefix_audio:
                    self.playout.enqueue(turn, job.prefix_audio)
                cached = tts.cached(job.text) if job.text else None
                if cached is not None:
                    self.playout.enqueue(turn, cached)
                else:
                    if job.text:
                        job.sentences = split_sentences(normalize_for_speech(job.text))
                    # Sentence by sentence: the first plays while the next is made, and a barge-in knows
                    # exactly which sentences were never synthesised.
                    while job.sentences_done < len(job.sentences):
                        audio = await tts.render_sentence(job.sentences[job.sentences_done])
                        self.playout.enqueue(turn, audio)
                        job.sentences_done += 1
                self.playout.finish_turn(turn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self.error("tts_failed", f"{type(exc).__name__}: {exc}")
            finally:
                self._current_job = None
                self._speech_jobs.task_done()

    def _on_frame_sent(self, turn: TurnAudio) -> None:
        self.metrics.frames_out.inc()
        if turn.frames_sent == 1:
            at = turn.first_frame_at or self.clock()
            if not self._first_frame_logged and self.started_at is not None:
                self._first_frame_logged = True
                first_ms = (at - self.started_at) * 1000
                self.metrics.first_greeting.observe(first_ms / 1000)
                self.services.db.submit(self.services.db.sync.update_call, self.call_sid, first_response_ms=first_ms)
                self.record("first_frame", {"ms_after_start": round(first_ms, 1)})
            waiter = self._first_frame_waiters.pop(turn.turn, None)
            if waiter is not None:
                waiter(at)

    async def _send(self, cmd: OutboundCommand) -> None:
        if self.stream_sid is None:
            return  # nothing may be sent before start: there is no streamSid yet
        await self.transport.send_text(self.serializer.serialize(self.stream_sid, cmd))

    # == records and errors ======================================================================
    def record(self, kind: str, data: dict[str, Any] | None = None) -> None:
        if self.call_sid is None or self.stream_sid is None:
            return
        self.services.db.submit(self.services.db.sync.add_event, self.call_sid, kind, data or {})

    def error(self, kind: str, message: str) -> None:
        self.metrics.errors.labels(kind).inc()
        self.log.warning("%s: %s", kind, message)
        self.record("error", {"kind": kind, "message": message})

    # == lifecycle ===============================================================================
    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("task %s failed", task.get_name(), exc_info=exc)
            self.metrics.errors.labels("task_failed").inc()
            self.record("error", {"kind": "task_failed", "message": f"{task.get_name()}: {exc!r}"})
            if not self.ended.is_set():
                # A broken call is ended cleanly rather than left half alive.
                asyncio.ensure_future(self.close("internal_error", outcome="error"))

    async def close(self, reason: str, *, outcome: str | None = None, record: bool = True) -> None:
        """Ends the call: cancels every task, closes the record, closes the socket. Idempotent."""
        if self.ended.is_set():
            return
        self.ended.set()
        self.end_reason = reason
        if self._digit_timer:
            self._digit_timer.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)
        if self.call_sid and self.stream_sid and record:
            ctx = self.ctx
            final = outcome or self._outcome or _outcome_for(ctx)
            if ctx is not None and ctx.escalated:
                self.services.contexts[self.call_sid] = ctx  # survives a transfer back from an agent
            self._flush_unwritten_turns()
            self.record("end", {"reason": reason, "outcome": final})
            await self.services.db.run(self.services.db.sync.end_call, self.call_sid, reason=reason, outcome=final)
            if ctx is not None and ctx.customer is not None:
                self.services.db.submit(
                    self.services.db.sync.update_call, self.call_sid, customer_id=ctx.customer.customer_id
                )
            self.metrics.calls_ended.labels(final).inc()
            self.metrics.active_calls.dec()
            self.services.sessions.pop(self.call_sid, None)
            self.log.info("call ended: %s (%s)", reason, final)
        with contextlib.suppress(Exception):
            await self.transport.close(1000, reason[:120])


def _outcome_for(ctx: CallContext | None) -> str:
    """Honest outcomes: only a confirmed resolution counts as resolved; a caller who never spoke is silent."""
    if ctx is None:
        return "error"
    if ctx.escalated:
        return "escalated"
    if ctx.resolved:
        return "resolved"
    if not any(t.channel in ("voice", "dtmf") and t.text for t in ctx.turns):
        return "silent"
    return "abandoned"


def _mask_number(number: str | None) -> str:
    if not number:
        return "unknown"
    return number[:-4] + "****" if len(number) > 6 else "****"
