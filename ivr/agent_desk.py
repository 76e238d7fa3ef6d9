"""The agent desk: escalated calls wait in per-skill queues until a contact-centre agent accepts one.

An agent sees the whole context the bot gathered (the handoff payload) before taking the call;
accepting transfers the live call to the agent's number through Twilio. Scheduled SMS callbacks
join the same queue once their time has come, as items of kind "callback".

Routes (all behind the bearer token except the page itself, which asks for the token):
  GET  /agent                                  the desk page (static HTML + JS)
  GET  /api/agent/queue?skill=billing          snapshot {"type": "queue", "items": [...]}
  GET  /api/agent/escalations/{id}             one escalation with its payload
  POST /api/agent/escalations/{id}/accept      {"agent": "alice"} -> transfer; 409 if already taken
  POST /api/agent/callbacks/{id}/accept        {"agent": "alice"} -> the agent owns the callback
  POST /api/agent/ws-ticket                    -> {"ticket": ..., "expires_in": 30}: opens one WebSocket
  GET  /api/agent/ws?ticket=...&skill=...      pushes queue snapshots whenever something changes
                                               (or with the Authorization header, for non-browser clients)

The bearer token is accepted in the Authorization header only, never in a URL: a browser, which cannot
set headers on a WebSocket, first trades it for a ticket that is valid 30 s and opens one socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from aiohttp import WSMsgType, web
from sqlalchemy import update

from ivr.auth import TicketBook, require_token
from ivr.metrics import Metrics
from ivr.storage import AsyncStorage, CallbackRow, EscalationRow, Storage, callbacks, escalations, utcnow
from ivr.storage_queue import StorageUnavailable
from telephony.twilio_rest import Transfer, TwilioApiError, TwilioRest

log = logging.getLogger("ivr.agent_desk")

STATIC_DIR = Path(__file__).parent / "static"
WS_TICKET_TTL_S = 30.0

# Context fields from the handoff payload that the desk shows on each waiting call.
CONTEXT_FIELDS = (
    "customer_id",
    "customer_tier",
    "lifetime_value",
    "sentiment_trend",
    "intent_guess",
    "confidence",
    "last_3_messages",
    "issue_history",
    "preferred_channel",
    "region",
    "goodwill_offer",
    "transcript_url",
)


class AcceptedEscalation(EscalationRow):
    """An escalation an agent accepted, with the carrier's answer to the transfer."""

    transfer: Transfer


class Queue(TypedDict):
    """What the desk shows (`GET /api/agent/queue`, pushed on the WebSocket)."""

    type: str
    skill: str | None
    now: str
    queues: dict[str, int]
    items: list[dict[str, Any]]


class EscalationNotFound(LookupError):
    pass


class AlreadyTaken(Exception):
    """Another agent accepted this item first (HTTP 409)."""

    def __init__(self, message: str, record: EscalationRow | CallbackRow | None = None) -> None:
        super().__init__(message)
        self.record = record


class TransferFailed(Exception):
    def __init__(self, message: str, record: EscalationRow) -> None:
        super().__init__(message)
        self.record = record


class AgentDesk:
    def __init__(
        self,
        storage: AsyncStorage,
        twilio: TwilioRest,
        *,
        api_token: str | None,
        agent_number: str,
        public_url: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        refresh_s: float = 5.0,
        on_transfer: Callable[[str], None] | None = None,
    ) -> None:
        """`refresh_s`: how often an open WebSocket re-checks the queue for callbacks that became due."""
        self.storage = storage
        self.twilio = twilio
        self.api_token = api_token
        self.agent_number = agent_number
        self.public_url = public_url.rstrip("/")
        self.metrics = metrics
        self.clock = clock
        self.refresh_s = refresh_s
        # Told before the carrier is asked to move the call: Twilio then ends our stream with `stop`,
        # which must not read as the caller hanging up.
        self.on_transfer = on_transfer
        self._sockets: dict[web.WebSocketResponse, str | None] = {}
        # Escalations waiting for a database that is down (by call), and the last queue storage could give.
        self._unstored: dict[str, dict[str, Any]] = {}
        self._last_waiting: list[EscalationRow] = []
        self._background: set[asyncio.Task[None]] = set()
        self.tickets = TicketBook(WS_TICKET_TTL_S, clock=lambda: self.clock().timestamp())
        # Tells the other nodes of a fleet that the queue changed (`ivr/fleet.py`); they push to their agents.
        self.broadcast: Callable[[], Awaitable[None]] | None = None

    # -- queue operations -----------------------------------------------------------------
    async def enqueue(
        self, call_sid: str, *, trigger: str, reason: str, queue: str, priority: int, payload: dict[str, Any]
    ) -> int | None:
        """Stores the escalation (status waiting) and pushes the new queue to connected agents.

        The call must already be recorded (Storage.start_call): escalations belong to a call. With the database
        down or slow the caller still joins the queue: the desk shows them from memory until the spooled row is
        written (returns None then).
        """
        # Waiting time is measured on the desk's clock (injectable in tests), not the storage's.
        at = self.clock()
        written = self.storage.submit(
            self.storage.sync.add_escalation,
            call_sid,
            trigger=trigger,
            reason=reason,
            queue=queue,
            priority=int(priority),
            payload=payload,
            at=at,
        )
        try:
            escalation_id = await self.storage.stored(written)
        except Exception as exc:  # noqa: BLE001 - logged (by submit, with the call id); the caller still waits
            log.error("call %s: cannot store escalation (%s): %s", call_sid, trigger, type(exc).__name__)
            escalation_id = None
        if self.metrics is not None:
            self.metrics.escalations.labels(trigger=trigger).inc()
        if escalation_id is None:
            self._unstored[call_sid] = {
                "kind": "escalation",
                "id": None,
                "stored": False,
                "call_sid": call_sid,
                "queue": queue,
                "priority": int(priority),
                "status": "waiting",
                "trigger": trigger,
                "reason": reason,
                "since": at.isoformat(),
                **{k: payload.get(k) for k in CONTEXT_FIELDS},
            }
            loop = asyncio.get_running_loop()
            written.add_done_callback(lambda done: loop.call_soon_threadsafe(self._written_later, call_sid, done))
            log.warning(
                "call %s: escalation (%s) on %s waits in memory until the database is back", call_sid, trigger, queue
            )
        else:
            log.info(
                "call %s: escalation %d queued on %s (priority %d, %s)",
                call_sid,
                escalation_id,
                queue,
                priority,
                trigger,
            )
        await self.notify()
        return escalation_id

    def _written_later(self, call_sid: str, done: Future[int]) -> None:
        """A spooled escalation reached the database: storage shows it from now on."""
        if done.cancelled() or done.exception() is not None:
            return  # never written: the desk keeps showing the caller from memory
        self._unstored.pop(call_sid, None)
        task = asyncio.ensure_future(self.notify())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def accept(self, escalation_id: int, agent: str) -> AcceptedEscalation:
        """Claims the escalation for `agent` and transfers the live call to the agent number.

        Raises EscalationNotFound, AlreadyTaken (someone else was first) or TransferFailed.
        """
        record = await self.storage.get_escalation(escalation_id)
        if record is None:
            raise EscalationNotFound(escalation_id)
        subject = f"escalation:{escalation_id}"
        claimed = await self.storage.run(_claim, self.storage.sync, escalations, escalation_id, agent, "accepted")
        if not claimed:
            current = await self.storage.get_escalation(escalation_id) or record
            await self.storage.audit(
                actor=agent,
                action="accept_conflict",
                subject=subject,
                details={"status": current["status"], "taken_by": current.get("agent")},
            )
            raise AlreadyTaken(f"escalation {escalation_id} is {current['status']} by {current.get('agent')}", current)
        await self.storage.audit(
            actor=agent,
            action="accept_escalation",
            subject=subject,
            details={"call_sid": record["call_sid"], "queue": record["queue"]},
        )
        await self.notify()
        if self.on_transfer is not None:
            self.on_transfer(record["call_sid"])
        try:
            transfer = await self.twilio.transfer(record["call_sid"], to_number=self.agent_number)
        except TwilioApiError as exc:
            if self.metrics is not None:
                self.metrics.errors.labels(kind="agent_transfer").inc()
            # A transient failure puts the caller back in the queue; a permanent one (the caller hung
            # up, 21220) closes the item so it does not sit there forever.
            status = "waiting" if exc.transient else "closed"
            await self.storage.update_escalation(escalation_id, status=status, agent=None if exc.transient else agent)
            await self.storage.audit(
                actor=agent,
                action="transfer_failed",
                subject=subject,
                details={"call_sid": record["call_sid"], "code": exc.code, "error": str(exc), "status": status},
            )
            log.error("call %s: transfer to agent %s failed: %s", record["call_sid"], agent, exc)
            await self.notify()
            raise TransferFailed(str(exc), await self.storage.get_escalation(escalation_id) or record) from exc
        await self.storage.update_escalation(escalation_id, status="transferred")
        await self.storage.audit(
            actor=agent,
            action="transfer",
            subject=subject,
            details={"call_sid": record["call_sid"], "attempts": transfer["attempts"]},
        )
        log.info("call %s: escalation %d transferred to agent %s", record["call_sid"], escalation_id, agent)
        await self.notify()
        result = await self.storage.get_escalation(escalation_id) or record
        return {**result, "transfer": transfer}

    async def accept_callback(self, callback_id: int, agent: str) -> CallbackRow:
        """The agent takes a due callback (and phones the customer); 409 if another agent has it."""
        record = await self.storage.get_callback(callback_id=callback_id)
        if record is None:
            raise EscalationNotFound(callback_id)
        subject = f"callback:{callback_id}"
        claimed = await self.storage.run(_claim_callback, self.storage.sync, callback_id)
        if not claimed:
            current = await self.storage.get_callback(callback_id=callback_id) or record
            await self.storage.audit(
                actor=agent, action="accept_conflict", subject=subject, details={"status": current["status"]}
            )
            raise AlreadyTaken(f"callback {callback_id} is {current['status']}", current)
        await self.storage.audit(
            actor=agent, action="accept_callback", subject=subject, details={"call_sid": record.get("call_sid")}
        )
        await self.notify()
        return await self.storage.get_callback(callback_id=callback_id) or record

    async def snapshot(self, skill: str | None = None) -> Queue:
        """Waiting escalations plus due callbacks, highest priority first, oldest first within one."""
        now = self.clock()
        items: list[dict[str, Any]] = []
        try:
            self._last_waiting = await self.storage.list_escalations(status="waiting")
            scheduled = await self.storage.list_callbacks(status="scheduled")
        except StorageUnavailable as exc:
            log.warning("agent queue from memory: %s", exc)  # the last known queue, plus callers since
            scheduled = []
        for escalation in self._last_waiting:
            if skill and escalation["queue"] != skill:
                continue
            items.append(_escalation_item(escalation, now))
        stored_sids = {e["call_sid"] for e in self._last_waiting}
        for unstored in self._unstored.values():
            if unstored["call_sid"] not in stored_sids and not (skill and unstored["queue"] != skill):
                items.append({**unstored, "waiting_s": _waiting(unstored["since"], now)})
        for callback in scheduled:
            due = _parse_time(callback["scheduled_for"])
            item = _callback_item(callback, now)
            if due is None or due > now or (skill and item["queue"] != skill):
                continue
            items.append(item)
        items.sort(key=lambda i: (-i["priority"], _parse_time(i["since"]) or now, i["kind"], i["id"] or 0))
        queues: dict[str, int] = {}
        for item in items:
            queues[item["queue"]] = queues.get(item["queue"], 0) + 1
        return {"type": "queue", "skill": skill, "now": now.isoformat(), "queues": queues, "items": items}

    async def notify(self) -> None:
        """Pushes a fresh snapshot to every connected agent, on this node and every other."""
        await self.push_local()
        if self.broadcast is not None:
            await self.broadcast()

    async def push_local(self) -> None:
        """Pushes a fresh snapshot to this node's agents (each with its own skill filter)."""
        for ws, skill in list(self._sockets.items()):
            await self._push(ws, skill)

    async def _push(self, ws: web.WebSocketResponse, skill: str | None) -> str | None:
        if ws.closed:
            self._sockets.pop(ws, None)
            return None
        snap = await self.snapshot(skill)
        try:
            await ws.send_json(snap)
        except (ConnectionError, RuntimeError) as exc:
            log.warning("agent websocket send failed: %s", exc)
            self._sockets.pop(ws, None)
        return _signature(snap)

    # -- HTTP -----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/agent", self._page),
            web.get("/agent/agent.js", self._script),
            web.get("/api/agent/queue", self._queue),
            web.get("/api/agent/escalations/{id}", self._get_escalation),
            web.post("/api/agent/escalations/{id}/accept", self._accept),
            web.post("/api/agent/callbacks/{id}/accept", self._accept_callback),
            web.post("/api/agent/ws-ticket", self._ws_ticket),
            web.get("/api/agent/ws", self._ws),
        ]

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return _static("agent.html", "text/html")

    async def _script(self, request: web.Request) -> web.StreamResponse:
        return _static("agent.js", "application/javascript")

    async def _queue(self, request: web.Request) -> web.Response:
        require_token(request, self.api_token)
        return web.json_response(await self.snapshot(request.query.get("skill") or None))

    async def _get_escalation(self, request: web.Request) -> web.Response:
        require_token(request, self.api_token)
        record = await self.storage.get_escalation(_int_id(request))
        if record is None:
            raise web.HTTPNotFound(text="no such escalation")
        return web.json_response({**record, "waiting_s": _waiting(record["at"], self.clock())})

    async def _accept(self, request: web.Request) -> web.Response:
        require_token(request, self.api_token)
        escalation_id = _int_id(request)
        agent = await _agent_name(request)
        try:
            return web.json_response(await self.accept(escalation_id, agent))
        except EscalationNotFound:
            raise web.HTTPNotFound(text="no such escalation") from None
        except AlreadyTaken as exc:
            return web.json_response({"error": str(exc), "escalation": exc.record}, status=409)
        except TransferFailed as exc:
            return web.json_response({"error": f"transfer failed: {exc}", "escalation": exc.record}, status=502)

    async def _accept_callback(self, request: web.Request) -> web.Response:
        require_token(request, self.api_token)
        callback_id = _int_id(request)
        agent = await _agent_name(request)
        try:
            return web.json_response(await self.accept_callback(callback_id, agent))
        except EscalationNotFound:
            raise web.HTTPNotFound(text="no such callback") from None
        except AlreadyTaken as exc:
            return web.json_response({"error": str(exc), "callback": exc.record}, status=409)

    async def _ws_ticket(self, request: web.Request) -> web.Response:
        require_token(request, self.api_token)
        return web.json_response(
            {"ticket": self.tickets.issue(), "expires_in": int(self.tickets.ttl_s)},
            headers={"Cache-Control": "no-store"},
        )

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        if "Authorization" in request.headers or not self.api_token:
            require_token(request, self.api_token)
        elif not self.tickets.redeem(request.query.get("ticket")):
            raise web.HTTPUnauthorized(text="missing, used or expired WebSocket ticket (POST /api/agent/ws-ticket)")
        skill = request.query.get("skill") or None
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets[ws] = skill
        try:
            last = await self._push(ws, skill)
            while not ws.closed:
                try:
                    msg = await ws.receive(timeout=self.refresh_s)
                except TimeoutError:
                    # Nothing changes in storage when a scheduled callback falls due, so look again.
                    snap = await self.snapshot(skill)
                    if _signature(snap) != last:
                        await ws.send_json(snap)
                        last = _signature(snap)
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT and msg.data == "refresh":
                    last = await self._push(ws, skill)
        finally:
            self._sockets.pop(ws, None)
        return ws


# -- helpers -------------------------------------------------------------------------------
def _claim(storage: Storage, table: Any, row_id: int, agent: str, status: str) -> bool:
    """Atomic compare-and-set: only one agent can move an escalation out of 'waiting'."""
    with storage.engine.begin() as conn:
        result = conn.execute(
            update(table).where(table.c.id == row_id, table.c.status == "waiting").values(status=status, agent=agent)
        )
        return (result.rowcount or 0) == 1


def _claim_callback(storage: Storage, callback_id: int) -> bool:
    with storage.engine.begin() as conn:
        result = conn.execute(
            update(callbacks)
            .where(callbacks.c.id == callback_id, callbacks.c.status == "scheduled")
            .values(status="done")
        )
        return (result.rowcount or 0) == 1


def _escalation_item(row: EscalationRow, now: datetime) -> dict[str, Any]:
    payload = row.get("payload") or {}
    item: dict[str, Any] = {
        "kind": "escalation",
        "id": row["id"],
        "call_sid": row["call_sid"],
        "queue": row["queue"],
        "priority": int(row["priority"] or 0),
        "status": row["status"],
        "trigger": row["trigger"],
        "reason": row["reason"],
        "since": row["at"],
        "waiting_s": _waiting(row["at"], now),
    }
    item.update({k: payload.get(k) for k in CONTEXT_FIELDS})
    return item


def _callback_item(row: CallbackRow, now: datetime) -> dict[str, Any]:
    payload = row.get("payload") or {}
    item: dict[str, Any] = {
        "kind": "callback",
        "id": row["id"],
        "call_sid": row.get("call_sid"),
        "queue": payload.get("queue") or "general",
        "priority": int(payload.get("priority") or 0),
        "status": row["status"],
        "trigger": payload.get("trigger") or "callback",
        "reason": payload.get("reason") or "customer asked to be called back",
        "since": row["scheduled_for"],
        "waiting_s": _waiting(row["scheduled_for"], now),
        "phone": row["phone"],
    }
    item.update({k: payload.get(k) for k in CONTEXT_FIELDS})
    item["customer_id"] = item["customer_id"] or row.get("customer_id")
    return item


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _waiting(since: Any, now: datetime) -> float:
    start = _parse_time(since)
    return round(max(0.0, (now - start).total_seconds()), 1) if start else 0.0


def _signature(snap: Queue) -> str:
    return json.dumps([(i["kind"], i["id"], i["status"]) for i in snap["items"]])


def _int_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPBadRequest(text="id must be an integer") from None


async def _agent_name(request: web.Request) -> str:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text='body must be JSON: {"agent": "name"}') from None
    agent = body.get("agent") if isinstance(body, dict) else None
    if not isinstance(agent, str) or not agent.strip() or len(agent) > 128:
        raise web.HTTPBadRequest(text='"agent" must be a non-empty name (at most 128 characters)')
    return agent.strip()


def _static(name: str, content_type: str) -> web.Response:
    body = (STATIC_DIR / name).read_bytes()
    return web.Response(
        body=body,
        content_type=content_type,
        headers={
            # The token may sit in the page URL: never leak it in a Referer; load nothing foreign.
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'",
            "Cache-Control": "no-store",
        },
    )
