"""One call, one `CallSession`: the orchestrator of the call's stages.

A frame's route reads from the method names: `on_message` (carrier wire -> typed event, through the
stream's `CarrierSerializer`) -> `on_event` -> `_caller_audio` / `_caller_key` (the `Listening` stage:
utterances, digits, long silences, barge-ins) -> the `Dialogue` (ASR, understanding, the flow) ->
`Speech` (TTS into the `Playout` pacer) -> `_send` (typed command -> wire). The `TurnLedger` keeps each
turn's timing; the `CallLog` its records and errors. Nothing slow runs in the frame path.

Every task of the call is a child of the session: `close()` cancels them all and closes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Protocol

from flows.context import CallContext
from ivr.admission import turn_away
from ivr.call_limits import CallWatchdog
from ivr.call_log import CallLog
from ivr.clock import Clock, LoopClock
from ivr.dialogue import Dialogue
from ivr.frame_order import FrameOrder
from ivr.listening import Heard, Listening, ListeningOptions
from ivr.privacy import mask_phone
from ivr.services import Services
from ivr.speech import Speech
from ivr.turn_end import turn_end_for
from ivr.turns import TurnLedger
from telephony.carrier import CarrierSerializer
from telephony.events import (
    AudioIn,
    CallEnded,
    CallStarted,
    DtmfIn,
    InboundEvent,
    MarkPlayed,
    OutboundCommand,
    ProtocolError,
)


class Transport(Protocol):
    async def send(self, frame: str | bytes) -> None: ...

    async def close(self, code: int, message: str) -> None: ...


class CallSession:
    def __init__(
        self,
        services: Services,
        transport: Transport,
        serializer: CarrierSerializer,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.services = services
        self.transport = transport
        self.serializer = serializer
        self.clock: Clock = clock or LoopClock()
        self.call = CallLog(services.db, services.metrics)
        self.ctx: CallContext | None = None
        self.dialogue: Dialogue | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.transferring = False  # an agent accepted the call; the carrier's `stop` is the transfer
        self._tasks: set[asyncio.Task[None]] = set()
        self._order = FrameOrder(self.call)
        self._watchdog: CallWatchdog | None = None
        audio = services.settings.audio
        self.ledger = TurnLedger(self.call, self.clock)
        self.speech = Speech(
            services.tts,
            self._send,
            self.clock,
            self.call,
            spawn=self._spawn,
            lead_ms=audio.outbound_lead_ms,
            chunk_ms=audio.outbound_chunk_ms,
            on_first_audio=self.ledger.first_audio,
        )
        self.listening = Listening(
            ListeningOptions(
                caller_audio=audio.caller_audio(), barge_in_ms=audio.barge_in_ms, inter_digit_s=audio.inter_digit_s
            ),
            self.clock,
            self.call,
            bot_speaking=lambda: self.speech.is_playing,
            emit=self._heard,
            turn_end=turn_end_for(services.settings.turn_end, services.asr, lambda: self.call_sid),
        )

    @property
    def call_sid(self) -> str | None:
        return self.call.call_id

    @property
    def started(self) -> bool:
        return self.dialogue is not None

    # == inbound: wire -> typed event -> stage ====================================================
    async def on_message(self, raw: str | bytes) -> None:
        """One message from the carrier. Bad input is logged, counted and dropped; a fatal one ends the stream."""
        try:
            event = self.serializer.deserialize(raw)
        except ProtocolError as exc:
            if exc.call_id is not None and not self.started:
                self.call.name(exc.call_id)
            self.error(exc.kind, str(exc))
            if exc.fatal:
                await self.close(exc.kind, outcome="error")
            return
        except Exception as exc:  # noqa: BLE001 - whatever a frame holds, it costs that frame, never the call
            self.call.log.error("undecodable message", exc_info=exc)
            self.error("malformed", f"undecodable message: {type(exc).__name__}")
            return
        await self.on_event(event)

    async def on_event(self, event: InboundEvent) -> None:
        if self.ended.is_set():
            return
        if isinstance(event, CallStarted):
            await self._start(event)
        elif isinstance(event, CallEnded):
            await self._stop()
        elif isinstance(event, AudioIn | DtmfIn | MarkPlayed):
            if not self.started:
                self.error(f"{_KIND[type(event)]}_before_start", f"{_KIND[type(event)]} before start: dropped")
            elif self._order.accept(event.sequence_number):
                if isinstance(event, AudioIn):
                    if self._watchdog is not None:
                        self._watchdog.frame()
                    self._caller_audio(event)
                elif isinstance(event, DtmfIn):
                    self._caller_key(event)
                else:
                    self._mark_played(event)

    def _caller_audio(self, event: AudioIn) -> None:
        if event.track == "caller":
            self.services.metrics.frames_in.inc()
            self.listening.hear_audio(event.payload)

    def _caller_key(self, event: DtmfIn) -> None:
        self.listening.hear_key(event.digit)

    def _mark_played(self, event: MarkPlayed) -> None:
        if self.speech.mark_played(event.name):
            self.listening.playback_finished()

    def _heard(self, item: Heard) -> None:
        if self.dialogue is not None:
            self.dialogue.hear(item)

    # == the call's life ===========================================================================
    async def _start(self, event: CallStarted) -> None:
        if self.started:
            self.error("duplicate_start", "a second start on one stream was ignored")
            self._order.used(event.sequence_number)
            return
        services = self.services
        self.call.bind(event.call_id)
        self._order.start_at(event.sequence_number)
        ctx = await services.resume_context(event.call_id)  # back from an agent: keep everything
        if ctx is None:
            ctx = CallContext(
                call_sid=event.call_id,
                caller=event.caller,
                region=services.region.name,
                industry=services.flow.industry,
            )
        self.ctx = ctx
        self.dialogue = Dialogue(
            services,
            ctx,
            self.call,
            self.clock,
            listening=self.listening,
            speech=self.speech,
            ledger=self.ledger,
            spawn=self._spawn,
            hang_up=self.close,
        )
        services.sessions[event.call_id] = self
        services.metrics.calls_total.inc()
        services.metrics.active_calls.inc()
        services.db.submit(
            services.db.sync.start_call,
            event.call_id,
            stream_sid=event.stream_id,
            caller=event.caller,
            params=event.params,
            region=services.region.name,
            flow=services.flow.name,
            node_id=services.settings.node_id,
        )
        self.call.record(
            "start", {"stream_sid": event.stream_id, "carrier": event.carrier, "returning": bool(ctx.turns)}
        )
        caller = mask_phone(event.caller) if event.caller else "unknown"
        self.call.log.info("call started from %s (stream %s)", caller, event.stream_id)
        self.ledger.call_started()
        self.speech.start()
        live, admission = len(services.sessions), services.admission
        if admission is None or admission.admits(live):
            self._spawn(self.dialogue.run(), "dialogue")
        else:
            busy = turn_away(admission, services.callbacks, ctx, self.call, self.speech, self.close, live_calls=live)
            self._spawn(busy, "all_lines_busy")
        self._watchdog = CallWatchdog(services.settings.calls, self.clock, self.close)
        self._spawn(self._watchdog.run(), "watchdog")

    async def _stop(self) -> None:
        if not self.started:
            await self.close("stop_before_start")
        else:
            moved = self.transferring or await self.services.transferred_elsewhere(self.call_sid or "")
            await self.close("transferred_to_agent" if moved else "caller_hung_up")

    # == outbound: typed command -> wire ===========================================================
    async def _send(self, cmd: OutboundCommand) -> None:
        await self.transport.send(self.serializer.serialize(cmd))

    def error(self, kind: str, message: str) -> None:
        self.call.error(kind, message)

    # == lifecycle =================================================================================
    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.call_sid}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self.call.log.error("task %s failed", task.get_name(), exc_info=exc)
        self.error("task_failed", f"{task.get_name()}: {exc!r}")
        if not self.ended.is_set():
            # A broken call is ended cleanly rather than left half alive.
            self._spawn(self.close("internal_error", outcome="error"), "close")

    async def close(self, reason: str, *, outcome: str | None = None) -> None:
        """Ends the call: cancels every task, closes the record, closes the socket. Idempotent."""
        if self.ended.is_set():
            return
        self.ended.set()
        self.end_reason = reason
        self.listening.close()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)
        if self.started and self.call_sid is not None:
            await self._close_record(self.call_sid, reason, outcome)
        with contextlib.suppress(Exception):
            await self.transport.close(1000, reason[:120])

    async def _close_record(self, call_id: str, reason: str, outcome: str | None) -> None:
        services, ctx = self.services, self.ctx
        final = outcome or (self.dialogue.outcome if self.dialogue else None) or _outcome_for(ctx)
        if ctx is not None and ctx.escalated:
            await services.keep_context(call_id, ctx)  # survives a transfer back from an agent
        self.ledger.flush_unwritten()
        self.call.record("end", {"reason": reason, "outcome": final})
        # Not awaited: a database that is down or hung must not hold the call (or SIGTERM) open; the write is
        # queued in order behind the call's other records and kept through an outage.
        services.db.submit(services.db.sync.end_call, call_id, reason=reason, outcome=final)
        if ctx is not None and ctx.customer is not None:
            services.db.submit(services.db.sync.update_call, call_id, customer_id=ctx.customer.customer_id)
        services.metrics.calls_ended.labels(final).inc()
        services.metrics.active_calls.dec()
        services.sessions.pop(call_id, None)
        if services.desk is not None and not self.transferring:
            services.desk.caller_left(call_id)  # out of the agents' queue at once, every page told
        self.call.log.info("call ended: %s (%s)", reason, final)


_KIND = {AudioIn: "media", DtmfIn: "dtmf", MarkPlayed: "mark"}


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
