"""Placing booked callbacks: at the booked time the server calls the customer back.

`CallbackDialler.run` is a scheduler on the server's clock (`ivr.clock`, so tests run it on virtual
time): it sleeps until the next booking falls due (or a booking changes and wakes it), then places the
call through Twilio's REST API (`calls.create`) with asynchronous answering-machine detection.

  answered, detection says human  -> the call joins the agent desk queue (kind "escalation", trigger
                                     "callback") with the context the caller left; the agent who accepts it
                                     is bridged by the desk's ordinary transfer. The callback is done.
  a machine (after its greeting)  -> a short voicemail in the company's name, then the next attempt is
                                     booked `retry_after_minutes` later, within the queue's hours; after
                                     `max_call_attempts` the callback stays at "no answer".
  busy, no answer, failed         -> the same as a machine, without the voicemail.

Twilio reaches us on (each request signed, checked as the voice webhook is):
  POST /twilio/callbacks/{id}/answer   TwiML while detection runs: a greeting, then hold
  POST /twilio/callbacks/{id}/hold     TwiML: still connecting (loops)
  POST /twilio/callbacks/{id}/amd      AnsweredBy: human | machine_end_beep | machine_end_silence | ...
  POST /twilio/callbacks/{id}/status   CallStatus at the end of the call
  POST /twilio/sms                     inbound SMS: STOP (and the other opt-out words) / START
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select, update
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from ivr.auth import require_twilio_signature
from ivr.callbacks import CallbackService
from ivr.clock import Clock
from ivr.privacy import mask_phone
from ivr.queue_hours import next_open
from ivr.storage import CallbackRow, Storage, callbacks, escalations, utcnow
from telephony.twilio_rest import OPT_OUT_KEYWORDS, TwilioApiError, sms_keyword

if TYPE_CHECKING:
    from ivr.agent_desk import AgentDesk

log = logging.getLogger("ivr.callback_dialler")

DIALLABLE = ("booked", "no_answer")
HUMAN = frozenset({"human", "unknown"})  # "unknown": detection could not tell; a person is the safer guess
HOLD_PAUSE_S = 20
DIAL_TIMEOUT = timedelta(minutes=10)  # a call Twilio says nothing about for this long counts as missed


class CallbackDialler:
    def __init__(
        self,
        service: CallbackService,
        *,
        clock: Clock,
        now: Callable[[], datetime] = utcnow,
        desk: AgentDesk | None = None,
        auth_token: str | None = None,
        insecure_dev: bool = False,
        poll_s: float = 60.0,
    ) -> None:
        """`clock` sleeps, `now` tells the date (tests give both from one virtual clock). `poll_s`: how often
        storage is looked at even when nothing woke us (another process may have booked)."""
        self.service = service
        self.storage = service.storage
        self.twilio = service.twilio
        self.config = service.config
        self.clock = clock
        self.now = now
        self.desk = desk
        self.auth_token = auth_token
        self.insecure_dev = insecure_dev
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        service.on_booked = self.wake

    def wake(self) -> None:
        """A booking changed: look again now."""
        self._wake.set()

    # -- the scheduler ------------------------------------------------------------------------
    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            self._wake.clear()
            try:
                next_due = await self.dial_due()
            except Exception as exc:  # noqa: BLE001 - a bad round (database down) must not stop the callbacks
                log.error("callback dialler: %s: %s", type(exc).__name__, exc)
                next_due = None
            delay = self.poll_s
            if next_due is not None:
                delay = min(delay, max(0.0, (next_due - self.now()).total_seconds()))
            if task is not None and task.cancelling():
                # asyncio.wait_for (3.11) can swallow a cancel that lands as its result arrives: honour it here
                raise asyncio.CancelledError
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                woken.cancel()

    async def dial_due(self) -> datetime | None:
        """Places every callback that is due and gives up on calls Twilio never reported on; returns when
        there is next something to do (None: nothing booked)."""
        now = self.now()
        upcoming: datetime | None = None
        for callback_id, placed_at in await self.storage.run(_dialling, self.storage.sync):
            placed = _parse(placed_at)
            if placed is None or placed + DIAL_TIMEOUT <= now:
                # Twilio never told us how the call went (its webhooks could not reach us): try again later.
                await self._missed(callback_id, "no word from Twilio about the call")
            elif upcoming is None or placed + DIAL_TIMEOUT < upcoming:
                upcoming = placed + DIAL_TIMEOUT
        rows = await self.storage.run(_diallable, self.storage.sync, self.config.max_call_attempts)
        for row in rows:
            when = _parse(row["scheduled_for"])
            if when is None:
                continue
            if when <= now:
                await self.place(row, now)
                if upcoming is None or now + DIAL_TIMEOUT < upcoming:
                    upcoming = now + DIAL_TIMEOUT  # when to give up on hearing how it went
            elif upcoming is None or when < upcoming:
                upcoming = when
        return upcoming

    async def place(self, row: CallbackRow, now: datetime) -> None:
        """Claims the callback (one process places it) and asks Twilio to call the customer."""
        attempt = int(row.get("call_attempts") or 0) + 1
        claimed = await self.storage.run(_claim, self.storage.sync, row["id"], row["status"], attempt, now)
        if not claimed:
            return
        base = f"{self.service.public_url}/twilio/callbacks/{row['id']}"
        log.info(
            "callback %d (call %s): calling %s, attempt %d of %d",
            row["id"],
            row.get("call_sid"),
            mask_phone(row["phone"]),
            attempt,
            self.config.max_call_attempts,
        )
        try:
            placed = await self.twilio.place_call(
                row["phone"],
                from_=self.service.from_number,
                url=f"{base}/answer",
                status_callback=f"{base}/status",
                amd_callback=f"{base}/amd",
                idempotency_key=f"{row['idempotency_key']}:call:{row['scheduled_for']}:{attempt}",
                call_sid=row.get("call_sid"),
            )
        except TwilioApiError as exc:
            log.error("callback %d (call %s): placing the call failed: %s", row["id"], row.get("call_sid"), exc)
            await self.storage.update_callback(row["id"], error=str(exc))
            await self._missed(row["id"], f"call not placed: {exc}")
            return
        await self.storage.update_callback(row["id"], outbound_call_sid=placed["call_sid"])
        await self.storage.audit(
            actor="system",
            action="place_callback",
            subject=f"callback:{row['id']}",
            details={"call_sid": row.get("call_sid"), "outbound_call_sid": placed["call_sid"], "attempt": attempt},
        )
        await self.service.changed()

    async def _missed(self, callback_id: int, why: str) -> CallbackRow | None:
        """Nobody (or a machine) answered: book the next attempt within the queue's hours, if any are left."""
        row = await self.storage.get_callback(callback_id=callback_id)
        if row is None:
            return None
        attempts = int(row.get("call_attempts") or 0)
        values: dict[str, Any] = {"status": "no_answer", "error": why}
        retry = None
        if attempts < self.config.max_call_attempts:
            after = self.now() + timedelta(minutes=self.config.retry_after_minutes)
            retry = next_open(self.service.queue_of(row), after)
        if retry is not None:
            values["scheduled_for"] = retry
        await self.storage.update_callback(callback_id, **values)
        await self.storage.audit(
            actor="system",
            action="callback_missed",
            subject=f"callback:{callback_id}",
            details={"why": why, "attempt": attempts, "next_attempt": retry.isoformat() if retry else None},
        )
        log.info(
            "callback %d (call %s): %s; %s",
            callback_id,
            row.get("call_sid"),
            why,
            f"next attempt {retry.isoformat()}" if retry else f"no attempts left after {attempts}",
        )
        await self.service.changed()
        self.wake()
        return await self.storage.get_callback(callback_id=callback_id)

    # -- Twilio's webhooks -----------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twilio/callbacks/{id}/answer", self._answer),
            web.post("/twilio/callbacks/{id}/hold", self._hold),
            web.post("/twilio/callbacks/{id}/amd", self._amd),
            web.post("/twilio/callbacks/{id}/status", self._status),
            web.post("/twilio/sms", self._sms),
        ]

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the scheduler runs while the server does."""
        task = asyncio.ensure_future(self.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _signed(self, request: web.Request) -> dict[str, str]:
        params = {k: str(v) for k, v in (await request.post()).items()}
        require_twilio_signature(
            request,
            params,
            auth_token=self.auth_token,
            public_url=self.service.public_url,
            insecure_dev=self.insecure_dev,
        )
        return params

    async def _row(self, request: web.Request, params: dict[str, str]) -> CallbackRow:
        try:
            callback_id = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such callback") from None
        row = await self.storage.get_callback(callback_id=callback_id)
        sid = params.get("CallSid")
        if row is None or (sid and sid != row.get("outbound_call_sid")):
            raise web.HTTPNotFound(text="no such callback call")
        return row

    async def _answer(self, request: web.Request) -> web.Response:
        row = await self._row(request, await self._signed(request))
        response = VoiceResponse()
        response.say(f"Hello, this is {self.config.company_name}, calling you back as you asked.")
        response.redirect(f"{self.service.public_url}/twilio/callbacks/{row['id']}/hold", method="POST")
        return _twiml(response)

    async def _hold(self, request: web.Request) -> web.Response:
        row = await self._row(request, await self._signed(request))
        response = VoiceResponse()
        response.say("Please hold: we are connecting you to a colleague.")
        response.pause(length=HOLD_PAUSE_S)
        response.redirect(f"{self.service.public_url}/twilio/callbacks/{row['id']}/hold", method="POST")
        return _twiml(response)

    async def _amd(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        row = await self._row(request, params)
        answered_by = params.get("AnsweredBy", "unknown")
        if row["status"] != "dialling":
            return web.Response(status=204)  # the call already ended (Twilio's callbacks can arrive late)
        call_sid = str(row["outbound_call_sid"])
        await self.storage.update_callback(row["id"], answered_by=answered_by)
        if answered_by in HUMAN:
            await self._bridge(row, call_sid)
        else:
            await self._voicemail(row, call_sid, answered_by)
        return web.Response(status=204)

    async def _bridge(self, row: CallbackRow, call_sid: str) -> None:
        """A person answered: the call joins the agent queue with the caller's context; done."""
        payload = dict(row.get("payload") or {})
        await self.storage.update_callback(row["id"], status="done", error=None)
        await self.storage.audit(
            actor="system",
            action="callback_answered",
            subject=f"callback:{row['id']}",
            details={"call_sid": row.get("call_sid"), "outbound_call_sid": call_sid},
        )
        await self.storage.start_call(
            call_sid,
            stream_sid=None,
            caller=row["phone"],
            params={"Direction": "outbound-api", "callback_id": str(row["id"]), "original_call": row.get("call_sid")},
        )
        reason = str(payload.get("reason") or "the customer asked to be called back")
        payload.update({"call_sid": call_sid, "callback_id": row["id"], "original_call_sid": row.get("call_sid")})
        if self.desk is not None:
            await self.desk.enqueue(
                call_sid,
                trigger="callback",
                reason=f"Booked callback, answered: {reason}",
                queue=str(payload.get("queue") or "general"),
                priority=int(payload.get("priority") or 50),
                payload=payload,
            )
        log.info("callback %d: %s answered; waiting for an agent as call %s", row["id"], "a person", call_sid)

    async def _voicemail(self, row: CallbackRow, call_sid: str, answered_by: str) -> None:
        updated = await self._missed(row["id"], f"answering machine ({answered_by})")
        retry = (
            self.service.when_words(updated) if updated and updated["scheduled_for"] != row["scheduled_for"] else None
        )
        message = f"Hello, this is {self.config.company_name}, returning your call as you asked. Sorry we missed you. "
        message += (
            f"We will try again on {retry}. You can change the time from the link we texted you."
            if retry
            else "Please call us when it suits you."
        )
        response = VoiceResponse()
        response.say(message)
        response.hangup()
        try:
            await self.twilio.redirect(call_sid, str(response))
        except TwilioApiError as exc:
            log.error("callback %d (call %s): voicemail not left: %s", row["id"], row.get("call_sid"), exc)

    async def _status(self, request: web.Request) -> web.Response:
        params = await self._signed(request)
        row = await self._row(request, params)
        status = params.get("CallStatus", "")
        if row["status"] == "dialling":
            # Ended before detection said anything: busy, no answer, failed, or hung up at once.
            await self._missed(row["id"], f"call {status or 'ended'}")
        elif row["status"] == "done" and row.get("outbound_call_sid"):
            sid = str(row["outbound_call_sid"])
            await self.storage.run(_close_waiting, self.storage.sync, sid)
            await self.storage.run(self.storage.sync.end_call, sid, reason=f"callback_{status}", outcome="escalated")
            await self.service.changed()
        return web.Response(status=204)

    async def _sms(self, request: web.Request) -> web.Response:
        """Inbound SMS: the opt-out words record an opt-out (no more texts), START undoes it."""
        params = await self._signed(request)
        keyword = sms_keyword(params.get("Body", ""))
        phone, _ = self.service.normalise(params.get("From", ""))
        if keyword is not None and phone is not None:
            if keyword in OPT_OUT_KEYWORDS:
                await self.storage.run(self.storage.sync.opt_out, phone, keyword, self.now())
            else:
                await self.storage.run(self.storage.sync.opt_in, phone)
            action = "sms_opt_out" if keyword in OPT_OUT_KEYWORDS else "sms_opt_in"
            await self.storage.audit(actor="customer", action=action, subject=f"phone:{mask_phone(phone)}")
            log.info("SMS %s from %s", keyword, mask_phone(phone))
        return _twiml(MessagingResponse())  # an empty <Response/>: we send no reply of our own


def _twiml(response: VoiceResponse | MessagingResponse) -> web.Response:
    return web.Response(text=str(response), content_type="application/xml")


def _parse(value: Any) -> datetime | None:
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _diallable(storage: Storage, max_attempts: int) -> list[CallbackRow]:
    """Booked or missed callbacks with attempts left, soonest first."""
    with storage.engine.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                select(callbacks.c.id)
                .where(
                    callbacks.c.status.in_(DIALLABLE),
                    callbacks.c.scheduled_for.is_not(None),
                    (callbacks.c.call_attempts.is_(None)) | (callbacks.c.call_attempts < max_attempts),
                )
                .order_by(callbacks.c.scheduled_for)
            )
        ]
    return [row for row in (storage.get_callback(callback_id=i) for i in ids) if row is not None]


def _dialling(storage: Storage) -> list[tuple[int, Any]]:
    """Callbacks being called now, with when the call was placed."""
    with storage.engine.connect() as conn:
        query = select(callbacks.c.id, callbacks.c.last_attempt_at).where(callbacks.c.status == "dialling")
        return [(int(r[0]), r[1]) for r in conn.execute(query)]


def _claim(storage: Storage, callback_id: int, status: str, attempt: int, now: datetime) -> bool:
    """Compare-and-set: only one process moves a callback to dialling."""
    with storage.engine.begin() as conn:
        result = conn.execute(
            update(callbacks)
            .where(callbacks.c.id == callback_id, callbacks.c.status == status)
            .values(
                status="dialling", call_attempts=attempt, last_attempt_at=now, answered_by=None, outbound_call_sid=None
            )
        )
        return (result.rowcount or 0) == 1


def _close_waiting(storage: Storage, call_sid: str) -> None:
    """The answered callback call ended while still waiting for an agent."""
    with storage.engine.begin() as conn:
        conn.execute(
            update(escalations)
            .where(escalations.c.call_sid == call_sid, escalations.c.status == "waiting")
            .values(status="closed")
        )
