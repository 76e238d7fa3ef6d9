"""Callbacks: the link texted to a caller who would rather be called back, and the booking it makes.

`CallbackService.request` normalises the caller's number (E.164), stores a callback row with an
unguessable token and an idempotency key, and texts `{public_url}/callback/{token}` in the company's
name (never to a number that sent STOP). On that page the customer picks a half-hour slot within the
queue's business hours over the coming days, shown in their own time zone (from their number), and can
change or cancel it later from the same link. A booking is confirmed in words on the page and by SMS,
takes the caller out of the live agent queue, and wakes the dialler (`ivr.callback_dialler`), which
places the call at the booked time.

States: sent (link texted) -> booked -> dialling -> done (a person answered), or no_answer (a machine or
nobody; the dialler books the next attempt, a bounded number of times); cancelled by the customer at any
point before the call. The page never says "we called you" before a person answered.

Routes (no bearer token: the unguessable token in the link is the credential):
  GET  /callback/{token}          the page: the booking (if any) in words and the slots to pick
  POST /callback/{token}          form field `slot` (ISO 8601) -> booked
  POST /callback/{token}/cancel   -> cancelled
  GET  /api/callbacks             (bearer token) the desk's callback list with states
  GET  /agent/callbacks.js        the desk page's callback panel

A link expires `CallbackConfig.link_ttl_days` after it was texted (410 and a page saying so), books or
moves its slot at most `max_reschedules` times, and answers at most `max_requests_per_minute` requests
(429 and a page saying so). The access log never shows the token (ivr.access_log).
"""

from __future__ import annotations

import html
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from ivr.auth import LocalRequestCounter, RequestCounter, require_token
from ivr.privacy import mask_phone
from ivr.queue_hours import QueueHours, QueueHoursConfig, clock_words, customer_zone, day_words, in_words, zone_words
from ivr.queue_hours import slots as queue_slots
from ivr.storage import AsyncStorage, CallbackRow, Storage, audit_log, callbacks, escalations, utcnow
from ivr.storage_queue import StorageUnavailable
from telephony.twilio_rest import TwilioApiError, TwilioRest

log = logging.getLogger("ivr.callbacks")

STATIC_DIR = Path(__file__).parent / "static"
MIN_LEAD = timedelta(minutes=10)  # a slot closer than this is skipped: nobody could be ready for it
RATE_WINDOW_S = 60.0
# A callback the customer can still book, move or cancel from the link.
CHANGEABLE = ("sent", "booked", "no_answer")
EXPIRED_TEXT = (
    "This callback link has expired. If you still need us to call you back, please call us again "
    "and ask for a callback: we will text you a new link."
)
OVERUSED_TEXT = (
    "This link has been used to change the callback time too many times. Your last booking stands; "
    "to change it, please call us."
)
RATE_TEXT = "Too many requests for this link. Please wait a minute and try again."
CANCELLED_TEXT = "Your callback is cancelled. If you still need us, please call us again."
FAILED_TEXT = "We could not set up this callback. Please call us again."
FINISHED_SHOWN_FOR = timedelta(days=1)  # done and cancelled callbacks stay on the desk's list this long
# What the desk and the page call each state of a call back.
_STATE_WORDS = {
    "sent": "link sent",
    "booked": "booked",
    "dialling": "dialling",
    "no_answer": "no answer",
    "done": "done",
    "cancelled": "cancelled",
}
MAX_TRACKED_LINKS = 10_000  # per-link request counters kept in memory (oldest dropped first)


class CallbackConfig(BaseModel):
    """Settings.callbacks: how long a texted link works and how hard it may be used."""

    link_ttl_days: float = Field(7.0, gt=0, description="a callback link stops working this long after it is made")
    max_reschedules: int = Field(5, ge=1, description="how many times one link may book or move its slot")
    max_requests_per_minute: int = Field(20, ge=1, description="requests one link may make per minute")
    company_name: str = Field("Acme Support", description="who the texts, the page and the voicemail say we are")
    max_call_attempts: int = Field(3, ge=1, description="calls placed for one booking before giving up")
    retry_after_minutes: float = Field(30.0, gt=0, description="a missed call back is tried again this much later")


class CallbackLink(CallbackRow):
    """A callback row with the link texted to the caller."""

    link: str


class CallbackService:
    def __init__(
        self,
        storage: AsyncStorage,
        twilio: TwilioRest,
        public_url: str,
        from_number: str,
        clock: Callable[[], datetime] = utcnow,
        *,
        default_region: str = "US",
        on_change: Callable[[], Awaitable[None] | None] | None = None,
        config: CallbackConfig | None = None,
        hours: QueueHoursConfig | None = None,
        api_token: str | None = None,
        authorize: Callable[[web.Request], Awaitable[object]] | None = None,
    ) -> None:
        """`default_region`: ISO country for numbers given without +country code.
        `on_change`: called after anything the agent queue shows changes (wire AgentDesk.notify).
        `on_booked`: told after a booking changes (the dialler wakes up). `config`: link lifetime and limits,
        company name, call attempts (Settings.callbacks). `hours`: each queue's hours (Settings.queue_hours).
        `api_token`: guards the desk's callback list; `authorize` (the desk's `viewer`: a logged-in agent or
        the API token) replaces that check where the desk is served."""
        self.storage = storage
        self.twilio = twilio
        self.public_url = public_url.rstrip("/")
        self.from_number = from_number
        self.clock = clock
        self.default_region = default_region
        self.on_change = on_change
        self.on_booked: Callable[[], None] | None = None
        self.config = config or CallbackConfig()
        self.hours = hours or QueueHoursConfig()
        self.api_token = api_token
        self.authorize = authorize
        # Requests per link; a fleet counts them in Redis (`ivr.fleet`), so the limit holds across nodes.
        self.requests: RequestCounter = LocalRequestCounter(lambda: self.clock().timestamp(), MAX_TRACKED_LINKS)

    def link(self, token: str) -> str:
        return f"{self.public_url}/callback/{token}"

    async def request(
        self,
        call_sid: str,
        phone: str,
        customer_id: str | None,
        escalation_payload: dict[str, Any],
        *,
        escalation_id: int | None = None,
        leave_queue: bool = False,
        why: str = "offer",
    ) -> CallbackLink:
        """Records the callback request and texts the link once. Returns the callback row (+ "link").

        `why`: "offer" (the caller asked for a callback) or "overflow" (they have waited past the queue's
        threshold and stay in the queue). An invalid number or one that sent STOP is recorded as failed with
        the reason and nothing is sent. Twilio failures (after TwilioRest's retries) are recorded as failed
        with Twilio's error code. `escalation_id`: the caller leaves the agent queue now (status "callback").
        """
        key = f"{call_sid}:callback"
        token = secrets.token_urlsafe(24)
        e164, error = self.normalise(phone)
        if e164 is not None and await self.opted_out(e164):
            error = "the number opted out of texts (STOP)"
        row_values: dict[str, Any] = {
            "call_sid": call_sid,
            "customer_id": customer_id,
            "token": token,
            "idempotency_key": key,
            "payload": escalation_payload or {},
            "created_at": self.clock(),
            "attempts": 0,
            "call_attempts": 0,
            "phone": e164 or str(phone or "")[:32],
            "status": "failed" if error else "pending",
            "error": error,
        }
        written = self.storage.submit(self.storage.sync.add_callback, **row_values)
        if leave_queue or escalation_id is not None:
            self.storage.submit(_escalations_to_callback, self.storage.sync, call_sid)
        try:
            callback_id = await self.storage.stored(written)
        except Exception as exc:
            # Another process inserted the same key between check and insert: same request, same row.
            existing = await self.storage.run(_callback_by_key, self.storage.sync, key)
            if existing is None:
                log.error("call %s: cannot store callback request: %s", call_sid, exc)
                raise
            return self._with_link(existing)
        body = self._link_text(token, why)
        if callback_id is None:
            # The database is down or slow: the row waits in the spool (with this token, so the link works once
            # it is written) and the caller gets the SMS now.
            log.warning("call %s: callback request spooled until the database is back", call_sid)
            unstored: CallbackRow = {
                **row_values,  # type: ignore[typeddict-item]
                "id": 0,
                "message_sid": None,
                "scheduled_for": None,
                "outbound_call_sid": None,
                "answered_by": None,
                "last_attempt_at": None,
                "created_at": row_values["created_at"].isoformat(),
            }
            if error or e164 is None:
                log.error("call %s: callback not sent: %s", call_sid, error)
                return self._with_link(unstored)
            sent = await self._text(call_sid, e164, body, key)
            self.storage.submit(_update_by_key, self.storage.sync, key, sent)
            return self._with_link({**unstored, **sent})  # type: ignore[typeddict-item]
        row = await self.storage.get_callback(callback_id=callback_id)
        assert row is not None
        if row["token"] != token:
            log.info(
                "call %s: callback already requested (id %d, %s); not sending again",
                call_sid,
                callback_id,
                row["status"],
            )
            if leave_queue or escalation_id is not None:
                await self.changed()
            return self._with_link(row)
        if leave_queue or escalation_id is not None:
            await self.changed()
        if error:
            log.error("call %s: callback not sent: %s", call_sid, error)
            return self._with_link(row)
        assert e164 is not None  # _normalise gives either a number or an error
        sent = await self._text(call_sid, e164, body, key)
        self.storage.submit(self.storage.sync.update_callback, callback_id, **sent)
        try:
            stored = await self.storage.get_callback(callback_id=callback_id)
        except StorageUnavailable:
            stored = None
        return self._with_link({**row, **sent} if stored is None else stored)  # type: ignore[typeddict-item]

    async def opted_out(self, e164: str) -> bool:
        """Whether the number sent STOP. With the database unreachable we cannot tell: the text goes, and
        Twilio, which keeps its own STOP list, refuses it (21610) if the number did opt out."""
        try:
            return bool(await self.storage.run(self.storage.sync.opted_out, e164))
        except StorageUnavailable:
            log.warning("opt-out list unavailable; relying on Twilio's for %s", mask_phone(e164))
            return False

    def _link_text(self, token: str, why: str) -> str:
        company = self.config.company_name
        if why == "overflow":
            lead = f"{company}: sorry for the wait. Stay on the line, or we can call you back instead."
        else:
            lead = f"{company}: you asked us to call you back."
        return f"{lead} Pick a time that suits you: {self.link(token)} Reply STOP to opt out."

    async def _text(self, call_sid: str | None, e164: str, body: str, key: str) -> dict[str, Any]:
        """Texts `body` (Twilio retries inside); the callback row's new values, sent or failed."""
        attempts = 0

        def count(n: int) -> None:
            nonlocal attempts
            attempts = n

        try:
            sid = await self.twilio.send_sms(
                e164, body, from_=self.from_number, idempotency_key=key, on_attempt=count, call_sid=call_sid
            )
        except TwilioApiError as exc:
            log.error("call %s: SMS failed after %d attempt(s): %s", call_sid, attempts, exc)
            if exc.code == 21610:  # Twilio knows of a STOP we missed: remember it (spooled if the database is down)
                self.storage.submit(self.storage.sync.opt_out, e164, "STOP", self.clock())
            return {"status": "failed", "attempts": attempts, "error": str(exc)}
        return {"status": "sent", "attempts": attempts, "message_sid": sid, "error": None}

    # -- booking ----------------------------------------------------------------------------
    async def for_call(self, call_sid: str) -> CallbackRow | None:
        """The callback this call asked for, if any."""
        return await self.storage.run(_callback_by_key, self.storage.sync, f"{call_sid}:callback")

    def queue_of(self, row: CallbackRow) -> QueueHours:
        return self.hours.for_queue(str((row.get("payload") or {}).get("queue") or ""))

    def zone_of(self, row: CallbackRow) -> ZoneInfo:
        """The customer's time zone (from their number), else the queue's."""
        return customer_zone(row["phone"], self.queue_of(row).zone)

    def slots(self, row: CallbackRow) -> list[datetime]:
        """Half-hour slots within the row's queue hours over the coming days, at least MIN_LEAD away."""
        return queue_slots(self.queue_of(row), self.clock(), days=self.hours.days_ahead, lead=MIN_LEAD)

    def when_words(self, row: CallbackRow) -> str | None:
        when = _parse(row.get("scheduled_for"))
        return in_words(when, self.zone_of(row)) if when else None

    async def _usable(self, token: str) -> CallbackRow:
        row = await self.storage.get_callback(token=token)
        if row is None:
            raise web.HTTPNotFound(text="This callback link is not valid.")
        if row["status"] not in CHANGEABLE:
            raise web.HTTPConflict(text=f"This callback can no longer be changed ({_STATE_WORDS[row['status']]}).")
        if self.expired(row):
            raise web.HTTPGone(text=EXPIRED_TEXT)
        return row

    async def schedule(self, token: str, when: datetime) -> CallbackRow:
        """Books (or moves) the slot the customer picked. Raises web.HTTP* errors the page shows as-is."""
        row = await self._usable(token)
        booked = await self.storage.run(_times_scheduled, self.storage.sync, row["id"])
        if booked >= self.config.max_reschedules:
            log.warning("call %s: callback %d refused: link used %d times", row.get("call_sid"), row["id"], booked)
            raise web.HTTPTooManyRequests(text=OVERUSED_TEXT)
        if when.tzinfo is None:
            raise web.HTTPBadRequest(text="The time must include its UTC offset.")
        when = when.astimezone(UTC)
        # Any slot still ahead counts, so a time picked just as its lead ran out is not refused.
        ahead = queue_slots(self.queue_of(row), self.clock(), days=self.hours.days_ahead, lead=timedelta(0))
        if when not in ahead:
            raise web.HTTPBadRequest(text="Please pick one of the times offered.")
        # A new booking gets the full number of attempts again.
        await self.storage.update_callback(
            row["id"], scheduled_for=when, status="booked", call_attempts=0, answered_by=None, error=None
        )
        await self.storage.audit(
            actor="caller",
            action="schedule_callback",
            subject=f"callback:{row['id']}",
            details={"call_sid": row.get("call_sid"), "scheduled_for": when.isoformat()},
        )
        log.info("call %s: callback %d booked for %s", row.get("call_sid"), row["id"], when.isoformat())
        if row.get("call_sid"):
            await self._leave_queue(str(row["call_sid"]))
        await self.changed()
        if self.on_booked is not None:
            self.on_booked()
        updated = await self.storage.get_callback(callback_id=row["id"])
        assert updated is not None
        await self._confirm(updated, booked + 1)
        return updated

    async def cancel(self, token: str) -> CallbackRow:
        row = await self._usable(token)
        await self.storage.update_callback(row["id"], status="cancelled")
        await self.storage.audit(actor="caller", action="cancel_callback", subject=f"callback:{row['id']}", details={})
        log.info("call %s: callback %d cancelled by the customer", row.get("call_sid"), row["id"])
        await self.changed()
        if self.on_booked is not None:
            self.on_booked()
        updated = await self.storage.get_callback(callback_id=row["id"])
        assert updated is not None
        return updated

    async def _confirm(self, row: CallbackRow, booking: int) -> None:
        """The booking in words, by SMS (one per booking, never to a number that sent STOP)."""
        if await self.opted_out(row["phone"]):
            return
        body = (
            f"{self.config.company_name}: we will call you on {self.when_words(row)}. "
            f"To change or cancel: {self.link(row['token'])} Reply STOP to opt out."
        )
        sent = await self._text(row.get("call_sid"), row["phone"], body, f"{row['idempotency_key']}:confirm:{booking}")
        if sent["status"] != "sent":
            log.error("call %s: callback %d confirmation not sent: %s", row.get("call_sid"), row["id"], sent["error"])

    async def _leave_queue(self, call_sid: str) -> None:
        """The caller will be called back: their live escalation leaves the agent queue."""
        await self.storage.run(_escalations_to_callback, self.storage.sync, call_sid)

    # -- HTTP -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/callback/{token}", self._page),
            web.post("/callback/{token}", self._pick),
            web.post("/callback/{token}/cancel", self._cancel),
            web.get("/api/callbacks", self._list),
            web.get("/agent/callbacks.js", self._panel_script),
        ]

    def expired(self, row: CallbackRow) -> bool:
        """True once the link is older than `link_ttl_days`."""
        created = datetime.fromisoformat(str(row["created_at"]))
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        return self.clock() - created > timedelta(days=self.config.link_ttl_days)

    async def _over_rate(self, token: str) -> bool:
        """Counts this request against the link's per-minute budget; True when it is over."""
        return await self.requests.hit(token, RATE_WINDOW_S) > self.config.max_requests_per_minute

    async def _page(self, request: web.Request) -> web.Response:
        if await self._over_rate(request.match_info["token"]):
            return self._render(429, "Too many requests", f"<p>{html.escape(RATE_TEXT)}</p>")
        row = await self.storage.get_callback(token=request.match_info["token"])
        if row is None:
            return self._render(404, "Link not valid", "<p>This callback link is not valid.</p>")
        status, when = row["status"], self.when_words(row)
        if status == "done":
            return self._render(
                200, "We called you back", f'<p class="booked">We called you on {html.escape(when or "")}.</p>'
            )
        if status == "dialling":
            return self._render(
                200, "Calling you now", f'<p class="booked">We are calling you now ({html.escape(when or "")}).</p>'
            )
        if status == "cancelled":
            return self._render(200, "Callback cancelled", f"<p>{html.escape(CANCELLED_TEXT)}</p>")
        if status not in CHANGEABLE:
            return self._render(200, "Callback", f"<p>{html.escape(FAILED_TEXT)}</p>")
        if self.expired(row):
            return self._render(410, "Link expired", f"<p>{html.escape(EXPIRED_TEXT)}</p>")
        title = "Your callback" if status == "booked" else "Pick a callback time"
        return self._render(200, title, self._booking_html(row, when))

    def _booking_html(self, row: CallbackRow, when: str | None) -> str:
        zone = self.zone_of(row)
        current = ""
        if row["status"] == "booked" and when:
            current = (
                f'<p class="current">We will call you on <strong>{html.escape(when)}</strong>.</p>'
                f'<form method="post" action="/callback/{html.escape(row["token"])}/cancel" class="cancel">'
                f'<button type="submit">Cancel the callback</button></form>'
                "<h2>Change the time</h2>"
            )
        elif row["status"] == "no_answer" and when:
            attempts = int(row.get("call_attempts") or 0)
            left = self.config.max_call_attempts - attempts
            current = (
                '<p class="current">We tried to call you and could not reach you. '
                + (f"We will try again on <strong>{html.escape(when)}</strong>." if left > 0 else "")
                + "</p><h2>Pick another time</h2>"
            )
        booked = _parse(row.get("scheduled_for")) if row["status"] == "booked" else None
        days: dict[str, list[datetime]] = {}
        for slot in self.slots(row):
            days.setdefault(day_words(slot.astimezone(zone)), []).append(slot)
        sections = []
        for i, (day, day_slots) in enumerate(days.items()):
            buttons = "".join(
                f'<button type="submit" name="slot" value="{s.isoformat()}"'
                + (' class="picked" aria-current="true"' if s == booked else "")
                + f">{clock_words(s.astimezone(zone))}</button>"
                for s in day_slots
            )
            sections.append(
                f"<details{' open' if i == 0 else ''}><summary>{html.escape(day)}</summary>"
                f'<form method="post" class="slots">{buttons}</form></details>'
            )
        zone_note = f'<p class="zone">Times are {html.escape(zone_words(zone))}.</p>'
        ask = "" if current else "<p>When should we call you back?</p>"
        return current + ask + zone_note + "".join(sections)

    async def _pick(self, request: web.Request) -> web.Response:
        if await self._over_rate(request.match_info["token"]):
            return self._render(429, "Too many requests", f"<p>{html.escape(RATE_TEXT)}</p>")
        if request.content_type == "application/json":
            data = await request.json()
            raw = data.get("slot") if isinstance(data, dict) else None
        else:
            raw = (await request.post()).get("slot")
        try:
            when = datetime.fromisoformat(str(raw))
        except (TypeError, ValueError):
            return self._render(400, "Pick a time", "<p>Please pick one of the times offered.</p>")
        try:
            row = await self.schedule(request.match_info["token"], when)
        except web.HTTPException as exc:
            title = {410: "Link expired", 429: "Link used too often"}.get(exc.status, "Callback")
            return self._render(exc.status, title, f"<p>{html.escape(exc.text or exc.reason)}</p>")
        words = self.when_words(row) or ""
        if request.content_type == "application/json":
            return web.json_response({"status": row["status"], "scheduled_for": row["scheduled_for"], "when": words})
        return self._render(
            200,
            "Callback booked",
            f'<p class="booked">Booked. We will call you on <strong>{html.escape(words)}</strong>. '
            "We have sent you a text with this time.</p>"
            '<p><a href="">Change or cancel</a></p>',
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        if await self._over_rate(request.match_info["token"]):
            return self._render(429, "Too many requests", f"<p>{html.escape(RATE_TEXT)}</p>")
        try:
            await self.cancel(request.match_info["token"])
        except web.HTTPException as exc:
            return self._render(exc.status, "Callback", f"<p>{html.escape(exc.text or exc.reason)}</p>")
        return self._render(200, "Callback cancelled", f"<p>{html.escape(CANCELLED_TEXT)}</p>")

    async def _panel_script(self, request: web.Request) -> web.Response:
        return web.Response(
            body=(STATIC_DIR / "callbacks_panel.js").read_bytes(),
            content_type="application/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def _list(self, request: web.Request) -> web.Response:
        if self.authorize is not None:
            await self.authorize(request)
        else:
            require_token(request, self.api_token)
        return web.json_response({"callbacks": await self.desk_list(request.query.get("status") or None)})

    async def desk_list(self, status: str | None = None) -> list[dict[str, Any]]:
        """What the desk's callback panel shows: callbacks still to make, and those finished in the last day,
        soonest first."""
        since = self.clock() - FINISHED_SHOWN_FOR

        def shown(row: CallbackRow) -> bool:
            if row["status"] not in _STATE_WORDS:
                return False
            if row["status"] in ("done", "cancelled"):
                last = _parse(row.get("last_attempt_at") or row.get("scheduled_for") or row["created_at"])
                return last is not None and last >= since
            return True

        rows = [r for r in await self.storage.list_callbacks(status) if shown(r)]
        out = []
        for row in rows:
            payload = row.get("payload") or {}
            out.append(
                {
                    "id": row["id"],
                    "status": row["status"],
                    "state": _STATE_WORDS[row["status"]],
                    "when": self.when_words(row),
                    "scheduled_for": row["scheduled_for"],
                    "phone": mask_phone(row["phone"]),
                    "customer_id": row.get("customer_id"),
                    "queue": payload.get("queue") or "general",
                    "reason": payload.get("reason"),
                    "call_attempts": int(row.get("call_attempts") or 0),
                    "max_call_attempts": self.config.max_call_attempts,
                    "answered_by": row.get("answered_by"),
                }
            )
        out.sort(key=lambda r: (r["scheduled_for"] is None, r["scheduled_for"] or "", r["id"]))
        return out

    def _render(self, status: int, title: str, body_html: str) -> web.Response:
        return _render(status, title, body_html, self.config.company_name)

    # -- internals ------------------------------------------------------------------------
    def normalise(self, phone: str) -> tuple[str | None, str | None]:
        try:
            parsed = phonenumbers.parse(str(phone or ""), self.default_region)
        except phonenumbers.NumberParseException as exc:
            return None, f"invalid phone number: {exc}"
        if not phonenumbers.is_valid_number(parsed):
            return None, "invalid phone number: not a valid number for its region"
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None

    def _with_link(self, row: CallbackRow) -> CallbackLink:
        return {**row, "link": self.link(row["token"])}

    async def changed(self) -> None:
        if self.on_change is not None:
            result = self.on_change()
            if inspect.isawaitable(result):
                await result


def _times_scheduled(storage: Storage, callback_id: int) -> int:
    """How often the caller booked or moved this callback (one audit row each)."""
    with storage.engine.connect() as conn:
        count = conn.execute(
            select(func.count())
            .select_from(audit_log)
            .where(audit_log.c.action == "schedule_callback", audit_log.c.subject == f"callback:{callback_id}")
        ).scalar()
    return int(count or 0)


def _update_by_key(storage: Storage, key: str, values: dict[str, Any]) -> None:
    """A callback whose id is not known yet (its row was spooled), by its idempotency key."""
    with storage.engine.begin() as conn:
        conn.execute(update(callbacks).where(callbacks.c.idempotency_key == key).values(**values))


def _callback_by_key(storage: Storage, key: str) -> CallbackRow | None:
    with storage.engine.connect() as conn:
        row = conn.execute(select(callbacks.c.id).where(callbacks.c.idempotency_key == key)).first()
    return storage.get_callback(callback_id=int(row[0])) if row else None


def _escalations_to_callback(storage: Storage, call_sid: str) -> None:
    with storage.engine.begin() as conn:
        conn.execute(
            update(escalations)
            .where(escalations.c.call_sid == call_sid, escalations.c.status == "waiting")
            .values(status="callback")
        )


def _parse(value: Any) -> datetime | None:
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _render(status: int, title: str, body_html: str, company: str) -> web.Response:
    template = Template((STATIC_DIR / "callback.html").read_text(encoding="utf-8"))
    page = template.safe_substitute(title=html.escape(title), body=body_html, company=html.escape(company))
    return web.Response(
        status=status,
        text=page,
        content_type="text/html",
        headers={
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        },
    )
