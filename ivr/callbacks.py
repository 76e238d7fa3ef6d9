"""SMS callbacks: "Hold for an agent? We'll text you a callback link now."

`CallbackService.request` normalises the caller's number (E.164), stores a callback row with an
unguessable token and an idempotency key, and texts `{public_url}/callback/{token}`. The caller
picks a half-hour slot on that page; once the slot arrives the agent desk lists the callback in
its queue. One request never sends two messages: the idempotency key is unique in storage (a
repeated request returns the stored row) and is also sent to Twilio as its idempotency token.

Routes (no bearer token: the unguessable token in the link is the credential):
  GET  /callback/{token}   page with the next few half-hour slots
  POST /callback/{token}   form field `slot` (ISO 8601) -> status scheduled

A link expires `CallbackConfig.link_ttl_days` after it was texted (410 and a page saying so), books or
moves its slot at most `max_reschedules` times, and answers at most `max_requests_per_minute` requests
(429 and a page saying so). The access log never shows the token (ivr.access_log).
"""

from __future__ import annotations

import html
import inspect
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any

import phonenumbers
from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from ivr.storage import AsyncStorage, CallbackRow, Storage, audit_log, callbacks, utcnow
from ivr.storage_queue import StorageUnavailable
from telephony.twilio_rest import TwilioApiError, TwilioRest

log = logging.getLogger("ivr.callbacks")

STATIC_DIR = Path(__file__).parent / "static"
SLOT_MINUTES = 30
SLOT_COUNT = 6
MIN_LEAD = timedelta(minutes=10)  # a slot closer than this is skipped: nobody could be ready for it
MAX_AHEAD = timedelta(days=7)
RATE_WINDOW_S = 60.0
EXPIRED_TEXT = (
    "This callback link has expired. If you still need us to call you back, please call us again "
    "and ask for a callback: we will text you a new link."
)
OVERUSED_TEXT = (
    "This link has been used to change the callback time too many times. Your last booking stands; "
    "to change it, please call us."
)
RATE_TEXT = "Too many requests for this link. Please wait a minute and try again."
MAX_TRACKED_LINKS = 10_000  # per-link request counters kept in memory (oldest dropped first)


class CallbackConfig(BaseModel):
    """Settings.callbacks: how long a texted link works and how hard it may be used."""

    link_ttl_days: float = Field(7.0, gt=0, description="a callback link stops working this long after it is made")
    max_reschedules: int = Field(5, ge=1, description="how many times one link may book or move its slot")
    max_requests_per_minute: int = Field(20, ge=1, description="requests one link may make per minute")


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
    ) -> None:
        """`default_region`: ISO country for numbers given without +country code.
        `on_change`: called after anything the agent queue shows changes (wire AgentDesk.notify).
        `config`: link lifetime and limits (Settings.callbacks)."""
        self.storage = storage
        self.twilio = twilio
        self.public_url = public_url.rstrip("/")
        self.from_number = from_number
        self.clock = clock
        self.default_region = default_region
        self.on_change = on_change
        self.config = config or CallbackConfig()
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

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
    ) -> CallbackLink:
        """Records the callback request and texts the link once. Returns the callback row (+ "link").

        An invalid number is recorded as failed with the reason and nothing is sent. Twilio failures
        (after TwilioRest's retries) are recorded as failed with Twilio's error code. If the caller was
        waiting in the agent queue (`escalation_id`), that escalation moves to status "callback".
        """
        key = f"{call_sid}:callback"
        token = secrets.token_urlsafe(24)
        e164, error = self._normalise(phone)
        row_values: dict[str, Any] = {
            "call_sid": call_sid,
            "customer_id": customer_id,
            "token": token,
            "idempotency_key": key,
            "payload": escalation_payload or {},
            "created_at": self.clock(),
            "attempts": 0,
            "phone": e164 or str(phone or "")[:32],
            "status": "failed" if error else "pending",
            "error": error,
        }
        written = self.storage.submit(self.storage.sync.add_callback, **row_values)
        try:
            callback_id = await self.storage.stored(written)
        except Exception as exc:
            # Another process inserted the same key between check and insert: same request, same row.
            existing = await self.storage.run(_callback_by_key, self.storage.sync, key)
            if existing is None:
                log.error("call %s: cannot store callback request: %s", call_sid, exc)
                raise
            return self._with_link(existing)
        if callback_id is None:
            # The database is down or slow: the row waits in the spool (with this token, so the link works once
            # it is written) and the caller gets the SMS now.
            log.warning("call %s: callback request spooled until the database is back", call_sid)
            unstored: CallbackRow = {
                **row_values,  # type: ignore[typeddict-item]
                "id": 0,
                "message_sid": None,
                "scheduled_for": None,
                "created_at": row_values["created_at"].isoformat(),
            }
            if error or e164 is None:
                log.error("call %s: callback not sent: %s", call_sid, error)
                return self._with_link(unstored)
            sent = await self._text_link(call_sid, e164, token, key)
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
            return self._with_link(row)
        if escalation_id is not None:
            await self.storage.update_escalation(escalation_id, status="callback")
            await self._changed()
        if error:
            log.error("call %s: callback not sent: %s", call_sid, error)
            return self._with_link(row)
        assert e164 is not None  # _normalise gives either a number or an error
        sent = await self._text_link(call_sid, e164, token, key)
        self.storage.submit(self.storage.sync.update_callback, callback_id, **sent)
        try:
            stored = await self.storage.get_callback(callback_id=callback_id)
        except StorageUnavailable:
            stored = None
        return self._with_link({**row, **sent} if stored is None else stored)  # type: ignore[typeddict-item]

    async def _text_link(self, call_sid: str, e164: str, token: str, key: str) -> dict[str, Any]:
        """Texts the link (Twilio retries inside); the callback row's new values, sent or failed."""
        attempts = 0

        def count(n: int) -> None:
            nonlocal attempts
            attempts = n

        body = f"You asked us to call you back. Pick a time that suits you: {self.link(token)}"
        try:
            sid = await self.twilio.send_sms(
                e164, body, from_=self.from_number, idempotency_key=key, on_attempt=count, call_sid=call_sid
            )
        except TwilioApiError as exc:
            log.error("call %s: callback SMS failed after %d attempt(s): %s", call_sid, attempts, exc)
            return {"status": "failed", "attempts": attempts, "error": str(exc)}
        return {"status": "sent", "attempts": attempts, "message_sid": sid, "error": None}

    async def schedule(self, token: str, when: datetime) -> CallbackRow:
        """Stores the slot the caller picked. Raises web.HTTP* errors the page shows as-is."""
        row = await self.storage.get_callback(token=token)
        if row is None:
            raise web.HTTPNotFound(text="This callback link is not valid.")
        if row["status"] not in ("sent", "scheduled"):
            raise web.HTTPConflict(text=f"This callback can no longer be changed (it is {row['status']}).")
        if self.expired(row):
            raise web.HTTPGone(text=EXPIRED_TEXT)
        booked = await self.storage.run(_times_scheduled, self.storage.sync, row["id"])
        if booked >= self.config.max_reschedules:
            log.warning("call %s: callback %d refused: link used %d times", row.get("call_sid"), row["id"], booked)
            raise web.HTTPTooManyRequests(text=OVERUSED_TEXT)
        now = self.clock()
        if when.tzinfo is None:
            raise web.HTTPBadRequest(text="The time must include its UTC offset.")
        if when < now - timedelta(minutes=SLOT_MINUTES) or when > now + MAX_AHEAD:
            raise web.HTTPBadRequest(text="Please pick one of the times offered.")
        when = when.astimezone(UTC)
        await self.storage.update_callback(row["id"], scheduled_for=when, status="scheduled")
        await self.storage.audit(
            actor="caller",
            action="schedule_callback",
            subject=f"callback:{row['id']}",
            details={"call_sid": row.get("call_sid"), "scheduled_for": when.isoformat()},
        )
        log.info("call %s: callback %d scheduled for %s", row.get("call_sid"), row["id"], when.isoformat())
        await self._changed()
        updated = await self.storage.get_callback(callback_id=row["id"])
        assert updated is not None
        return updated

    def slots(self) -> list[datetime]:
        """The next few half-hour boundaries, at least MIN_LEAD away."""
        now = self.clock().astimezone(UTC)
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % SLOT_MINUTES)
        out: list[datetime] = []
        slot = start + timedelta(minutes=SLOT_MINUTES)
        while len(out) < SLOT_COUNT:
            if slot - now >= MIN_LEAD:
                out.append(slot)
            slot += timedelta(minutes=SLOT_MINUTES)
        return out

    # -- HTTP -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/callback/{token}", self._page), web.post("/callback/{token}", self._pick)]

    def expired(self, row: CallbackRow) -> bool:
        """True once the link is older than `link_ttl_days`."""
        created = datetime.fromisoformat(str(row["created_at"]))
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        return self.clock() - created > timedelta(days=self.config.link_ttl_days)

    def _over_rate(self, token: str) -> bool:
        """Counts this request against the link's per-minute budget; True when it is over."""
        now = self.clock().timestamp()
        hits = self._hits.pop(token, None) or deque()
        while hits and hits[0] <= now - RATE_WINDOW_S:
            hits.popleft()
        hits.append(now)
        self._hits[token] = hits  # most recent last: the oldest link is forgotten first
        while len(self._hits) > MAX_TRACKED_LINKS:
            self._hits.popitem(last=False)
        return len(hits) > self.config.max_requests_per_minute

    async def _page(self, request: web.Request) -> web.Response:
        if self._over_rate(request.match_info["token"]):
            return _render(429, "Too many requests", f"<p>{html.escape(RATE_TEXT)}</p>")
        row = await self.storage.get_callback(token=request.match_info["token"])
        if row is None:
            return _render(404, "Link not valid", "<p>This callback link is not valid.</p>")
        if row["status"] == "done":
            return _render(200, "Callback done", "<p>We have already called you back. Thank you!</p>")
        if self.expired(row):
            return _render(410, "Link expired", f"<p>{html.escape(EXPIRED_TEXT)}</p>")
        buttons = "\n".join(
            f'<button type="submit" name="slot" value="{s.isoformat()}" data-utc="{s.isoformat()}">'
            f"{s.strftime('%a %H:%M')} UTC</button>"
            for s in self.slots()
        )
        current = ""
        booked = row["scheduled_for"]
        if row["status"] == "scheduled" and booked:
            current = f'<p class="current">Currently booked: <time>{html.escape(booked)}</time></p>'
        body = f'{current}<p>When should an agent call you back?</p><form method="post" class="slots">{buttons}</form>'
        return _render(200, "Pick a callback time", body)

    async def _pick(self, request: web.Request) -> web.Response:
        if self._over_rate(request.match_info["token"]):
            return _render(429, "Too many requests", f"<p>{html.escape(RATE_TEXT)}</p>")
        if request.content_type == "application/json":
            data = await request.json()
            raw = data.get("slot") if isinstance(data, dict) else None
        else:
            raw = (await request.post()).get("slot")
        try:
            when = datetime.fromisoformat(str(raw))
        except (TypeError, ValueError):
            return _render(400, "Pick a time", "<p>Please pick one of the times offered.</p>")
        try:
            row = await self.schedule(request.match_info["token"], when)
        except web.HTTPException as exc:
            title = {410: "Link expired", 429: "Link used too often"}.get(exc.status, "Callback")
            return _render(exc.status, title, f"<p>{html.escape(exc.text or exc.reason)}</p>")
        if request.content_type == "application/json":
            return web.json_response({"status": row["status"], "scheduled_for": row["scheduled_for"]})
        booked = html.escape(row["scheduled_for"] or "")
        return _render(
            200,
            "Callback booked",
            f'<p class="booked">Booked. An agent will call you at <time data-utc="{booked}">{booked}</time>.</p>',
        )

    # -- internals ------------------------------------------------------------------------
    def _normalise(self, phone: str) -> tuple[str | None, str | None]:
        try:
            parsed = phonenumbers.parse(str(phone or ""), self.default_region)
        except phonenumbers.NumberParseException as exc:
            return None, f"invalid phone number: {exc}"
        if not phonenumbers.is_valid_number(parsed):
            return None, "invalid phone number: not a valid number for its region"
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None

    def _with_link(self, row: CallbackRow) -> CallbackLink:
        return {**row, "link": self.link(row["token"])}

    async def _changed(self) -> None:
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


def _render(status: int, title: str, body_html: str) -> web.Response:
    template = Template((STATIC_DIR / "callback.html").read_text(encoding="utf-8"))
    page = template.safe_substitute(title=html.escape(title), body=body_html)
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
