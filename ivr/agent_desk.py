"""The agent desk: escalated calls wait in per-skill queues until a logged-in agent accepts one.

Agents are identities (`ivr.agents`): each logs in with a name and password and gets a desk-only
session token; every action is audited under the logged-in agent. Accept dials THAT agent's reach
(number, SIP URI or Twilio Client) with `<Dial action>`: the agent first hears a spoken brief (the
whisper, `<Number url>`), then the caller is bridged; no-answer, busy or failed puts the caller back
at the head of the queue with a spoken line, pauses the agent and tells every page. After the call
the agent writes a disposition and notes (wrap-up), stored with the leg and written to the CRM.
A caller who hangs up while waiting leaves the queue at once (abandoned), and every page is told.

Routes (agent session token or the admin API token in the Authorization header; never in a URL):
  GET  /agent                                   the desk page (static HTML + JS)
  POST /api/agent/login {"name", "password"}    -> {"token", "agent"}  (desk-only session)
  POST /api/agent/logout, GET /api/agent/me, POST /api/agent/status {"status": "available"|"away"}
  GET  /api/agent/queue?skill=billing           snapshot {"type": "queue", "items": [...], "queue_stats": ...}
  GET  /api/agent/escalations/{id}              one escalation with its payload
  POST /api/agent/escalations/{id}/accept       agent only -> dial the agent; 409 taken / agent not available
  POST /api/agent/escalations/{id}/decline      agent only -> audited; the page stops offering it to them
  POST /api/agent/legs/{id}/wrapup              agent only {"disposition", "notes"} -> stored + CRM
  POST /api/agent/ws-ticket, GET /api/agent/ws?ticket=...   live snapshots and alerts
  POST /twilio/desk/whisper?leg=N               Twilio (signed): the brief the agent hears on answer
  POST /twilio/desk/dial-status?leg=N           Twilio (signed): how the dial ended (DialCallStatus)

A booked callback joins the queue when the customer answers the call the dialler placed
(`ivr.callback_dialler`): an ordinary escalation of trigger "callback", accepted and bridged like any other.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from aiohttp import WSMsgType, web
from sqlalchemy import update

from flows.gateway import BackendError, BackendGateway
from flows.pci import mask_card_numbers
from ivr import agents as ag
from ivr.agents import AgentRow, DeskConfig, LegRow, Reach
from ivr.auth import DeskTickets, LocalDeskTickets, TicketBook, require_twilio_signature
from ivr.metrics import Metrics
from ivr.storage import AsyncStorage, CallbackRow, EscalationRow, Storage, escalations, utcnow
from ivr.storage_queue import StorageUnavailable
from telephony.twilio_rest import Transfer, TwilioApiError, TwilioRest
from telephony.twiml import (
    back_to_stream_twiml,
    dial_agent_twiml,
    goodbye_twiml,
    stream_token,
    stream_url,
    whisper_twiml,
)

log = logging.getLogger("ivr.agent_desk")

STATIC_DIR = Path(__file__).parent / "static"
WS_TICKET_TTL_S = 30.0
DISPOSITIONS = ("resolved", "follow_up", "callback_booked", "transferred", "not_resolved", "wrong_number")
REQUEUE_LINE = (
    "Sorry, the agent could not take your call just then. You are first in line, and the next agent will be with you."
)
GOODBYE_LINE = "Thank you for calling. Goodbye."

# Context fields from the handoff payload that the desk shows on each waiting call.
CONTEXT_FIELDS = (
    "customer_id",
    "customer_name",
    "caller_masked",
    "customer_tier",
    "lifetime_value",
    "sentiment_trend",
    "intent_guess",
    "confidence",
    "last_3_messages",
    "conversation",
    "issue_history",
    "preferred_channel",
    "region",
    "goodwill_offer",
    "transcript_url",
    "caller_verified",
)

# What each escalation trigger means, in the words an agent reads at a glance.
TRIGGER_WORDS = {
    "legal": "mentioned legal action",
    "vip_frustrated": "a valued customer is frustrated",
    "shouting": "the caller is shouting",
    "negative_phrases": "the caller is upset",
    "frustration": "the caller is frustrated",
    "caller_request": "asked for a person",
    "backend_failure": "our systems failed during the call",
    "low_confidence": "the assistant could not understand",
    "asr_failure": "we could not hear the caller",
    "tts_failure": "the caller could not hear us",
    "callback": "customer asked to be called back",
    "callback_answered": "callback answered: the customer is on the line",
}


class AcceptedEscalation(EscalationRow):
    """An escalation an agent accepted, with the carrier's answer to the transfer and the leg it started."""

    transfer: Transfer
    leg_id: int


class Queue(TypedDict):
    """What the desk shows (`GET /api/agent/queue`, pushed on the WebSocket)."""

    type: str
    skill: str | None
    now: str
    queues: dict[str, int]
    queue_stats: dict[str, dict[str, Any]]
    agents: list[dict[str, Any]]
    items: list[dict[str, Any]]
    me: dict[str, Any] | None


class EscalationNotFound(LookupError):
    pass


class AlreadyTaken(Exception):
    """Another agent accepted this item first (HTTP 409)."""

    def __init__(self, message: str, record: EscalationRow | CallbackRow | None = None) -> None:
        super().__init__(message)
        self.record = record


class AgentNotAvailable(Exception):
    """The agent is busy, in wrap-up or away: not offered callers (HTTP 409, in words)."""


class TransferFailed(Exception):
    def __init__(self, message: str, record: EscalationRow, *, retry: bool) -> None:
        super().__init__(message)
        self.record = record
        self.retry = retry


class AgentDesk:
    def __init__(
        self,
        storage: AsyncStorage,
        twilio: TwilioRest,
        *,
        api_token: str | None,
        public_url: str,
        config: DeskConfig | None = None,
        webhook_token: str | None = None,
        insecure_dev: bool = False,
        crm: BackendGateway | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        refresh_s: float = 5.0,
        on_transfer: Callable[[str], None] | None = None,
    ) -> None:
        """`webhook_token`: Twilio's auth token, which signs the whisper and dial-status webhooks (without it they
        are refused unless `insecure_dev`). `refresh_s`: how often an open WebSocket re-checks the queue."""
        self.storage = storage
        self.twilio = twilio
        self.api_token = api_token
        self.public_url = public_url.rstrip("/")
        self.config = config or DeskConfig()
        self.webhook_token = webhook_token
        self.insecure_dev = insecure_dev
        self.crm = crm
        self.metrics = metrics
        self.clock = clock
        self.refresh_s = refresh_s
        # Told before the carrier is asked to move the call: Twilio then ends our stream with `stop`,
        # which must not read as the caller hanging up.
        self.on_transfer = on_transfer
        self._sockets: dict[web.WebSocketResponse, tuple[str | None, str | None]] = {}
        # Escalations waiting for a database that is down (by call), and the last queue storage could give.
        self._unstored: dict[str, dict[str, Any]] = {}
        self._last_waiting: list[EscalationRow] = []
        self._background: set[asyncio.Task[None]] = set()
        self.ws_tickets: DeskTickets = LocalDeskTickets(
            TicketBook(WS_TICKET_TTL_S, clock=lambda: self.clock().timestamp())
        )
        # Tells the other nodes of a fleet that the queue changed (`ivr/fleet.py`); they push to their agents.
        self.broadcast: Callable[[], Awaitable[None]] | None = None
        self.broadcast_alert: Callable[[str, str], Awaitable[None]] | None = None

    # -- queue operations -----------------------------------------------------------------
    async def enqueue(
        self, call_sid: str, *, trigger: str, reason: str, queue: str, priority: int, payload: dict[str, Any]
    ) -> int | None:
        """Stores the escalation (status waiting) and pushes the new queue to connected agents.

        The call must already be recorded (Storage.start_call): escalations belong to a call. With the database
        down or slow the caller still joins the queue: the desk shows them from memory until the spooled row is
        written (returns None then).
        """
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
                "trigger_words": TRIGGER_WORDS.get(trigger, trigger.replace("_", " ")),
                "reason": reason,
                "since": at.isoformat(),
                "requeued": False,
                "missed_by": [],
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

    async def enqueue_callback_call(
        self, call_sid: str, *, reason: str, queue: str, priority: int, payload: dict[str, Any]
    ) -> int | None:
        """A callback the customer answered (a person, not a machine) joins the live queue with its context.

        The call must be recorded and live on Twilio: Accept dials an available agent into it exactly like an
        escalated inbound call (whisper, then bridge); the card reads "callback answered"."""
        return await self.enqueue(
            call_sid, trigger="callback_answered", reason=reason, queue=queue, priority=priority, payload=payload
        )

    def caller_left(self, call_sid: str) -> None:
        """The caller hung up: out of the queue now (abandoned), every page told. Never blocks the caller's close;
        called for every call that ends other than by a transfer (most were never queued: no page is pushed)."""
        was_unstored = self._unstored.pop(call_sid, None) is not None
        self._spawn(self._abandon(call_sid, was_unstored))

    async def _abandon(self, call_sid: str, changed: bool) -> None:
        try:
            ids = await self.storage.run(ag.abandon_waiting, self.storage.sync, call_sid)
        except Exception as exc:  # noqa: BLE001 - the row stays waiting; logged with the call id
            log.error("call %s: cannot mark the escalation abandoned: %s", call_sid, type(exc).__name__)
            ids = []
        if ids:
            log.info("call %s: caller hung up while waiting; escalation(s) %s abandoned", call_sid, ids)
        if ids or changed:
            await self.notify()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _written_later(self, call_sid: str, done: Future[int]) -> None:
        """A spooled escalation reached the database: storage shows it from now on."""
        if done.cancelled() or done.exception() is not None:
            return  # never written: the desk keeps showing the caller from memory
        self._unstored.pop(call_sid, None)
        self._spawn(self.notify())

    async def accept(self, escalation_id: int, agent_name: str) -> AcceptedEscalation:
        """Claims the escalation for a logged-in agent and dials that agent's reach into the live call.

        Raises EscalationNotFound, AgentNotAvailable, AlreadyTaken (someone else was first) or TransferFailed.
        """
        record = await self.storage.get_escalation(escalation_id)
        if record is None:
            raise EscalationNotFound(escalation_id)
        agent = await self.storage.run(ag.get_agent, self.storage.sync, agent_name)
        if agent is None:
            raise AgentNotAvailable(f"no agent account {agent_name!r}")
        if agent["status"] != "available":
            raise AgentNotAvailable(_unavailable_words(agent))
        subject = f"escalation:{escalation_id}"
        claimed = await self.storage.run(_claim, self.storage.sync, escalations, escalation_id, agent_name, "accepted")
        if not claimed:
            current = await self.storage.get_escalation(escalation_id) or record
            await self.storage.audit(
                actor=agent_name,
                action="accept_conflict",
                subject=subject,
                details={"status": current["status"], "taken_by": current.get("agent")},
            )
            raise AlreadyTaken(_taken_words(current), current)
        now = self.clock()
        busy = await self.storage.run(
            ag.set_status, self.storage.sync, agent_name, "busy", now=now, reason=None, only_from="available"
        )
        if not busy:  # the agent went away (another tab) between the check and the claim
            await self.storage.update_escalation(escalation_id, status="waiting", agent=None)
            await self.notify()
            raise AgentNotAvailable("Your status changed before the call was yours; set yourself available.")
        reach = Reach.parse(agent["reach"])
        leg_id = await self.storage.run(
            ag.add_leg, self.storage.sync, escalation_id, record["call_sid"], agent_name, str(reach), now=now
        )
        await self.storage.audit(
            actor=agent_name,
            action="accept_escalation",
            subject=subject,
            details={"call_sid": record["call_sid"], "queue": record["queue"], "reach": str(reach), "leg": leg_id},
        )
        await self.notify()
        if self.on_transfer is not None:
            self.on_transfer(record["call_sid"])
        twiml = dial_agent_twiml(
            reach.kind,
            reach.address,
            action_url=f"{self.public_url}/twilio/desk/dial-status?leg={leg_id}",
            whisper_url=f"{self.public_url}/twilio/desk/whisper?leg={leg_id}",
            timeout_s=self.config.ring_timeout_s,
        )
        try:
            transfer = await self.twilio.redirect(record["call_sid"], twiml, what="transfer to agent")
        except TwilioApiError as exc:
            await self._transfer_failed(record, agent_name, leg_id, exc)
            raise TransferFailed(
                _twilio_words(exc), await self.storage.get_escalation(escalation_id) or record, retry=exc.transient
            ) from exc
        await self.storage.update_escalation(escalation_id, status="transferred")
        await self.storage.audit(
            actor=agent_name,
            action="transfer",
            subject=subject,
            details={"call_sid": record["call_sid"], "attempts": transfer["attempts"], "leg": leg_id},
        )
        log.info("call %s: escalation %d ringing agent %s", record["call_sid"], escalation_id, agent_name)
        await self.notify()
        result = await self.storage.get_escalation(escalation_id) or record
        return {**result, "transfer": transfer, "leg_id": leg_id}

    async def _transfer_failed(self, record: EscalationRow, agent: str, leg_id: int, exc: TwilioApiError) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(kind="agent_transfer").inc()
        now = self.clock()
        caller_gone = exc.code == 21220
        status = "abandoned" if caller_gone else "waiting"
        await self.storage.update_escalation(record["id"], status=status, agent=None)
        await self.storage.run(ag.update_leg, self.storage.sync, leg_id, status="failed", ended_at=now)
        # Twilio itself failing is nobody's fault; a reach Twilio refuses (bad number) needs fixing first.
        bad_reach = exc.code in (21211, 21214, 13223, 13224)
        await self.storage.run(
            ag.set_status,
            self.storage.sync,
            agent,
            "away" if bad_reach else "available",
            now=now,
            reason="your phone could not be dialled; ask an administrator to check it" if bad_reach else None,
        )
        await self.storage.audit(
            actor=agent,
            action="transfer_failed",
            subject=f"escalation:{record['id']}",
            details={"call_sid": record["call_sid"], "code": exc.code, "error": str(exc), "status": status},
        )
        log.error("call %s: transfer to agent %s failed: %s", record["call_sid"], agent, exc)
        await self.notify()

    async def decline(self, escalation_id: int, agent: str) -> None:
        record = await self.storage.get_escalation(escalation_id)
        if record is None:
            raise EscalationNotFound(escalation_id)
        await self.storage.audit(
            actor=agent, action="decline", subject=f"escalation:{escalation_id}", details={"queue": record["queue"]}
        )

    # -- Twilio's callbacks on the dial ---------------------------------------------------------
    async def whisper(self, leg_id: int) -> str:
        """The agent answered: mark the leg connected and give the brief Twilio plays before the bridge."""
        leg = await self.storage.run(ag.get_leg, self.storage.sync, leg_id)
        if leg is None:
            raise EscalationNotFound(leg_id)
        record = await self.storage.get_escalation(leg["escalation_id"])
        await self.storage.run(ag.update_leg, self.storage.sync, leg_id, status="answered", answered_at=self.clock())
        await self.storage.audit(
            actor=leg["agent"], action="whisper", subject=f"escalation:{leg['escalation_id']}", details={"leg": leg_id}
        )
        await self.notify()
        return whisper_twiml(self.brief(record))

    def brief(self, record: EscalationRow | None) -> str:
        """Name, reason in words, tier, what the caller wants: a few seconds, spoken to the agent alone."""
        if record is None:
            return "Connecting a caller."
        payload = record.get("payload") or {}
        name = payload.get("customer_name") or "an unidentified caller"
        tier = payload.get("customer_tier")
        wants = payload.get("intent_guess")
        who = f"{name}, {tier} tier" if tier else name
        reason = str(record["reason"]).strip().rstrip(".") or TRIGGER_WORDS.get(record["trigger"], record["trigger"])
        text = f"{self.config.company_name} caller: {who}. {reason[:1].upper()}{reason[1:]}."
        if wants and wants not in ("speak_to_agent", "unknown"):
            text += f" They want help with {str(wants).replace('_', ' ')}."
        return mask_card_numbers(text + " Connecting you now.")

    async def dial_ended(self, leg_id: int, form: dict[str, str]) -> str:
        """Twilio's `<Dial action>`: completed -> wrap-up; no-answer, busy, failed -> the caller back at the head."""
        leg = await self.storage.run(ag.get_leg, self.storage.sync, leg_id)
        if leg is None:
            raise EscalationNotFound(leg_id)
        dial_status = form.get("DialCallStatus", "failed")
        caller_gone = form.get("CallStatus") in ("completed", "canceled", "no-answer", "busy", "failed")
        if leg["status"] not in ("ringing", "answered"):
            log.info("call %s: dial status for leg %d repeated (%s)", leg["call_sid"], leg_id, dial_status)
            return goodbye_twiml(GOODBYE_LINE) if leg["status"] == "completed" else self._requeue_twiml(form)
        now = self.clock()
        sync = self.storage.sync
        if dial_status in ("completed", "answered"):
            talk = _float(form.get("DialCallDuration"))
            await self.storage.run(
                ag.update_leg,
                sync,
                leg_id,
                status="completed",
                ended_at=now,
                talk_s=talk,
                answered_at=_parse_time(leg["answered_at"]) or now,
            )
            await self.storage.run(ag.set_status, sync, leg["agent"], "wrap_up", now=now, only_from="busy")
            await self.storage.audit(
                actor=leg["agent"],
                action="call_handled",
                subject=f"escalation:{leg['escalation_id']}",
                details={"call_sid": leg["call_sid"], "talk_s": talk, "leg": leg_id},
            )
            log.info("call %s: agent %s finished the call (%.0f s)", leg["call_sid"], leg["agent"], talk or 0)
            await self.notify()
            return goodbye_twiml(GOODBYE_LINE)
        status = dial_status if dial_status in ag.MISSED else "failed"
        await self.storage.run(ag.update_leg, sync, leg_id, status=status, ended_at=now)
        agent = await self.storage.run(ag.get_agent, sync, leg["agent"])
        who = agent["display_name"] if agent else leg["agent"]
        if caller_gone:
            # The caller hung up while it rang: not the agent's fault, and nobody to requeue.
            await self.storage.update_escalation(leg["escalation_id"], status="abandoned", agent=None)
            await self.storage.run(ag.set_status, sync, leg["agent"], "available", now=now, only_from="busy")
            text = "The caller hung up while the agent's phone rang."
        else:
            await self.storage.update_escalation(leg["escalation_id"], status="waiting", agent=None)
            why = {"no-answer": "did not answer", "busy": "was busy", "canceled": "was cancelled"}.get(
                status, "could not be reached"
            )
            await self.storage.run(
                ag.set_status,
                sync,
                leg["agent"],
                "away",
                now=now,
                reason=f"paused: your phone {why} at {now.strftime('%H:%M')} UTC; set yourself available when ready",
            )
            record = await self.storage.get_escalation(leg["escalation_id"])
            caller = _caller_words(record)
            text = f"{who} {why}: {caller} is back at the head of the {record['queue'] if record else ''} queue."
        if self.metrics is not None:
            self.metrics.errors.labels(kind="agent_transfer_" + status.replace("-", "_")).inc()
        await self.storage.audit(
            actor=leg["agent"],
            action="transfer_missed",
            subject=f"escalation:{leg['escalation_id']}",
            details={"call_sid": leg["call_sid"], "dial_status": status, "leg": leg_id, "caller_gone": caller_gone},
        )
        log.warning("call %s: transfer to agent %s ended %s; %s", leg["call_sid"], leg["agent"], status, text)
        await self.alert("requeued" if not caller_gone else "abandoned", text)
        await self.notify()
        return goodbye_twiml(GOODBYE_LINE) if caller_gone else self._requeue_twiml(form)

    def _requeue_twiml(self, form: dict[str, str]) -> str:
        call_sid = form.get("CallSid", "")
        keys = ("CallSid", "From", "To", "Caller", "Called", "Direction")
        params: dict[str, str] = {k: form[k] for k in keys if k in form}
        if self.webhook_token and call_sid:
            params["token"] = stream_token(self.webhook_token, call_sid)
        return back_to_stream_twiml(REQUEUE_LINE, stream_url(self.public_url), params)

    # -- wrap-up --------------------------------------------------------------------------------
    async def wrap_up(self, leg_id: int, agent: str, disposition: str, notes: str) -> LegRow:
        """Disposition and notes, stored with the leg and written to the CRM; the agent is available again.

        A CRM that fails leaves the wrap-up stored (crm_status "failed"); sending the wrap-up again retries it."""
        leg = await self.storage.run(ag.get_leg, self.storage.sync, leg_id)
        if leg is None or leg["agent"] != agent:
            raise EscalationNotFound(leg_id)
        if leg["status"] != "completed":
            raise AlreadyTaken("This call is not finished yet; wrap it up when it ends.")
        if leg["wrapped_at"] is not None and leg["crm_status"] != "failed":
            raise AlreadyTaken("This call is already wrapped up.")
        if disposition not in DISPOSITIONS:
            raise ValueError(f"disposition must be one of: {', '.join(DISPOSITIONS)}")
        notes = mask_card_numbers(notes.strip())[:4000]
        record = await self.storage.get_escalation(leg["escalation_id"])
        customer_id = ((record or {}).get("payload") or {}).get("customer_id") if record else None
        crm_status, crm_error = "skipped", None
        if self.crm is not None and customer_id:
            try:
                await self.crm.call(
                    "crm",
                    "log_interaction",
                    {
                        "customer_id": customer_id,
                        "call_sid": leg["call_sid"],
                        "agent": agent,
                        "disposition": disposition,
                        "notes": notes,
                        "handle_s": float(leg["talk_s"] or 0.0),
                        "idempotency_key": f"wrapup:{leg['call_sid']}:{leg_id}",
                    },
                    call_sid=leg["call_sid"],
                )
                crm_status = "written"
            except BackendError as exc:
                crm_status, crm_error = "failed", str(exc)
                log.error("call %s: wrap-up not written to the CRM: %s", leg["call_sid"], exc)
        now = self.clock()
        await self.storage.run(
            ag.update_leg,
            self.storage.sync,
            leg_id,
            disposition=disposition,
            notes=notes,
            wrapped_at=now,
            crm_status=crm_status,
        )
        await self.storage.run(ag.set_status, self.storage.sync, agent, "available", now=now, only_from="wrap_up")
        await self.storage.audit(
            actor=agent,
            action="wrap_up",
            subject=f"escalation:{leg['escalation_id']}",
            details={"call_sid": leg["call_sid"], "disposition": disposition, "crm": crm_status},
        )
        await self.notify()
        result = await self.storage.run(ag.get_leg, self.storage.sync, leg_id)
        assert result is not None
        if crm_error:
            raise CrmNotWritten(
                "Saved here, but the CRM did not take it (it may be down). Retry to send it again.", result
            )
        return result

    # -- what the pages show ---------------------------------------------------------------------
    async def snapshot(self, skill: str | None = None, agent: str | None = None) -> Queue:
        """Waiting escalations (answered callbacks among them): callers a missed transfer put back first, then highest
        priority, oldest first; per-queue counts, longest wait and SLA level; the agents; the agent's own call."""
        now = self.clock()
        items: list[dict[str, Any]] = []
        agents_now: list[AgentRow] = []
        legs: dict[int, list[LegRow]] = {}
        try:
            if self.config.wrap_up_limit_s is not None:
                overdue = await self.storage.run(
                    ag.end_overdue_wrap_ups, self.storage.sync, now=now, limit_s=self.config.wrap_up_limit_s
                )
                for name in overdue:
                    log.info("agent %s: wrap-up time is over; available again", name)
                    await self.storage.audit(actor=name, action="wrap_up_timeout", subject=f"agent:{name}")
            self._last_waiting = await self.storage.list_escalations(status="waiting")
            agents_now = await self.storage.run(ag.list_agents, self.storage.sync)
            legs = await self.storage.run(ag.legs_of, self.storage.sync, [e["id"] for e in self._last_waiting])
        except StorageUnavailable as exc:
            log.warning("agent queue from memory: %s", exc)  # the last known queue, plus callers since
        names = {a["name"]: a["display_name"] for a in agents_now}
        for escalation in self._last_waiting:
            if skill and escalation["queue"] != skill:
                continue
            items.append(_escalation_item(escalation, now, legs.get(escalation["id"], []), names))
        stored_sids = {e["call_sid"] for e in self._last_waiting}
        for unstored in self._unstored.values():
            if unstored["call_sid"] not in stored_sids and not (skill and unstored["queue"] != skill):
                items.append({**unstored, "waiting_s": _waiting(unstored["since"], now)})
        items.sort(
            key=lambda i: (
                not i.get("requeued"),
                -i["priority"],
                _parse_time(i["since"]) or now,
                i["kind"],
                i["id"] or 0,
            )
        )
        queues: dict[str, int] = {}
        stats: dict[str, dict[str, Any]] = {}
        for item in items:
            queues[item["queue"]] = queues.get(item["queue"], 0) + 1
            sla = self.config.sla_for(item["queue"])
            item["sla_s"] = sla
            item["sla_level"] = _sla_level(item["waiting_s"], sla)
            st = stats.setdefault(item["queue"], {"waiting": 0, "longest_wait_s": 0.0, "sla_s": sla, "level": "ok"})
            st["waiting"] += 1
            st["longest_wait_s"] = max(st["longest_wait_s"], item["waiting_s"])
            st["level"] = _sla_level(st["longest_wait_s"], sla)
        me = await self._me(agent, now) if agent else None
        return {
            "type": "queue",
            "skill": skill,
            "now": now.isoformat(),
            "queues": queues,
            "queue_stats": stats,
            "agents": [
                {"name": a["name"], "display_name": a["display_name"], "status": a["status"]} for a in agents_now
            ],
            "items": items,
            "me": me,
        }

    async def _me(self, name: str, now: datetime) -> dict[str, Any] | None:
        """The agent's own state and current call: the context stays on the page while it rings and after."""
        try:
            agent = await self.storage.run(ag.get_agent, self.storage.sync, name)
            leg = await self.storage.run(ag.open_leg_of, self.storage.sync, name)
            record = await self.storage.get_escalation(leg["escalation_id"]) if leg else None
        except StorageUnavailable:
            return None
        if agent is None:
            return None
        call = _escalation_item(record, now, [], {}) if record else None
        return {"agent": agent, "leg": leg, "call": call}

    async def alert(self, kind: str, text: str) -> None:
        """A line every page shows at once (a caller requeued, a caller gone), on every node."""
        await self.alert_local(kind, text)
        if self.broadcast_alert is not None:
            await self.broadcast_alert(kind, text)

    async def alert_local(self, kind: str, text: str) -> None:
        message = {"type": "alert", "kind": kind, "text": text, "at": self.clock().isoformat()}
        for ws in list(self._sockets):
            try:
                await ws.send_json(message)
            except (ConnectionError, RuntimeError):
                self._sockets.pop(ws, None)

    async def notify(self) -> None:
        """Pushes a fresh snapshot to every connected page, on this node and (through `broadcast`) every other."""
        await self.push_local()
        if self.broadcast is not None:
            await self.broadcast()

    async def push_local(self) -> None:
        """Pushes a fresh snapshot to this node's pages (each with its own skill filter and agent)."""
        # The queue is read once per skill, not once per page; each page then gets its agent's own call.
        shared: dict[str | None, Queue] = {}
        for ws, (skill, agent) in list(self._sockets.items()):
            if skill not in shared:
                shared[skill] = await self.snapshot(skill)
            me = await self._me(agent, self.clock()) if agent else None
            await self._push(ws, skill, agent, {**shared[skill], "me": me})

    async def _push(
        self, ws: web.WebSocketResponse, skill: str | None, agent: str | None, snap: Queue | None = None
    ) -> str | None:
        if ws.closed:
            self._sockets.pop(ws, None)
            return None
        snap = snap or await self.snapshot(skill, agent)
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
            web.post("/api/agent/login", self._login),
            web.post("/api/agent/logout", self._logout),
            web.get("/api/agent/me", self._get_me),
            web.post("/api/agent/status", self._set_status),
            web.get("/api/agent/queue", self._queue),
            web.get("/api/agent/escalations/{id}", self._get_escalation),
            web.post("/api/agent/escalations/{id}/accept", self._accept),
            web.post("/api/agent/escalations/{id}/decline", self._decline),
            web.post("/api/agent/legs/{id}/wrapup", self._wrapup),
            web.post("/api/agent/ws-ticket", self._ws_ticket),
            web.get("/api/agent/ws", self._ws),
            web.post("/twilio/desk/whisper", self._whisper),
            web.post("/twilio/desk/dial-status", self._dial_status),
        ]

    async def viewer(self, request: web.Request) -> AgentRow | None:
        """The admin API token (None) or a logged-in agent; 401 for anything else. Header only, never a URL."""
        supplied = _bearer(request)
        if self.api_token and supplied and hmac.compare_digest(supplied.encode(), self.api_token.encode()):
            return None
        if supplied:
            agent = await self.storage.run(ag.agent_for_token, self.storage.sync, supplied, now=self.clock())
            if agent is not None:
                return agent
        raise web.HTTPUnauthorized(
            text="log in on the desk (or use the API token)", headers={"WWW-Authenticate": "Bearer"}
        )

    async def _agent(self, request: web.Request) -> AgentRow:
        """Agent actions need a logged-in agent: the admin token is for the API, not for taking calls."""
        agent = await self.viewer(request)
        if agent is None:
            raise web.HTTPForbidden(text="log in as an agent to take calls (the API token is not an agent)")
        return agent

    def _check_twilio(self, request: web.Request, params: dict[str, str]) -> None:
        require_twilio_signature(
            request,
            params,
            auth_token=self.webhook_token,
            public_url=self.public_url,
            insecure_dev=self.insecure_dev,
            on_bad=self.metrics.errors.labels("bad_signature").inc if self.metrics is not None else None,
        )

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return _static("agent.html", "text/html")

    async def _script(self, request: web.Request) -> web.StreamResponse:
        return _static("agent.js", "application/javascript")

    async def _login(self, request: web.Request) -> web.Response:
        body = await _json(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or len(name) > 64 or len(password) > 256:
            raise web.HTTPBadRequest(text='body must be {"name": "...", "password": "..."}')
        name = name.strip().lower()
        result = await self.storage.run(
            ag.login, self.storage.sync, name, password, now=self.clock(), ttl_s=self.config.session_ttl_s
        )
        if result is None:
            await self.storage.audit(actor=name[:64] or "-", action="login_failed", subject=f"agent:{name[:64]}")
            log.warning("desk login failed for %r", name[:64])
            await asyncio.sleep(0.2)  # slows guessing without holding anything
            raise web.HTTPUnauthorized(text="wrong name or password")
        token, agent = result
        await self.storage.audit(actor=name, action="login", subject=f"agent:{name}")
        return web.json_response(
            {"token": token, "agent": agent, "expires_in": int(self.config.session_ttl_s)},
            headers={"Cache-Control": "no-store"},
        )

    async def _logout(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        await self.storage.run(ag.logout, self.storage.sync, _bearer(request))
        await self.storage.run(ag.set_status, self.storage.sync, agent["name"], "away", now=self.clock(), reason=None)
        await self.storage.audit(actor=agent["name"], action="logout", subject=f"agent:{agent['name']}")
        await self.notify()
        return web.json_response({"ok": True})

    async def _get_me(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        return web.json_response(await self._me(agent["name"], self.clock()))

    async def _set_status(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        status = (await _json(request)).get("status")
        if status not in ("available", "away"):
            raise web.HTTPBadRequest(text="status must be available or away (busy and wrap-up follow your calls)")
        if agent["status"] in ("busy", "wrap_up"):
            words = "on a call" if agent["status"] == "busy" else "in wrap-up: save the wrap-up first"
            return web.json_response({"error": f"You are {words}."}, status=409)
        await self.storage.run(ag.set_status, self.storage.sync, agent["name"], status, now=self.clock())
        await self.storage.audit(
            actor=agent["name"], action="status", subject=f"agent:{agent['name']}", details={"status": status}
        )
        await self.notify()
        return web.json_response(await self._me(agent["name"], self.clock()))

    async def _queue(self, request: web.Request) -> web.Response:
        viewer = await self.viewer(request)
        skill = request.query.get("skill") or None
        return web.json_response(await self.snapshot(skill, viewer["name"] if viewer else None))

    async def _get_escalation(self, request: web.Request) -> web.Response:
        await self.viewer(request)
        record = await self.storage.get_escalation(_int_id(request))
        if record is None:
            raise web.HTTPNotFound(text="no such escalation")
        return web.json_response({**record, "waiting_s": _waiting(record["at"], self.clock())})

    async def _accept(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        escalation_id = _int_id(request)
        try:
            return web.json_response(await self.accept(escalation_id, agent["name"]))
        except EscalationNotFound:
            return web.json_response({"error": "This caller is no longer waiting."}, status=404)
        except AgentNotAvailable as exc:
            return web.json_response({"error": str(exc), "retry": False}, status=409)
        except AlreadyTaken as exc:
            return web.json_response({"error": str(exc), "escalation": exc.record, "retry": False}, status=409)
        except TransferFailed as exc:
            return web.json_response({"error": str(exc), "escalation": exc.record, "retry": exc.retry}, status=502)

    async def _decline(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        try:
            await self.decline(_int_id(request), agent["name"])
        except EscalationNotFound:
            raise web.HTTPNotFound(text="no such escalation") from None
        return web.json_response({"ok": True})

    async def _wrapup(self, request: web.Request) -> web.Response:
        agent = await self._agent(request)
        body = await _json(request)
        disposition, notes = body.get("disposition"), body.get("notes", "")
        if not isinstance(disposition, str) or not isinstance(notes, str):
            raise web.HTTPBadRequest(text='body must be {"disposition": "...", "notes": "..."}')
        try:
            return web.json_response(await self.wrap_up(_int_id(request), agent["name"], disposition, notes))
        except EscalationNotFound:
            return web.json_response({"error": "No such call of yours to wrap up."}, status=404)
        except AlreadyTaken as exc:
            return web.json_response({"error": str(exc)}, status=409)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except CrmNotWritten as exc:
            return web.json_response({"error": str(exc), "leg": exc.leg, "retry": True}, status=502)

    async def _whisper(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        self._check_twilio(request, params)
        try:
            twiml = await self.whisper(_leg_id(request))
        except EscalationNotFound:
            twiml = whisper_twiml("Connecting a caller.")
        return web.Response(text=twiml, content_type="application/xml")

    async def _dial_status(self, request: web.Request) -> web.Response:
        params = {k: str(v) for k, v in (await request.post()).items()}
        self._check_twilio(request, params)
        try:
            twiml = await self.dial_ended(_leg_id(request), params)
        except EscalationNotFound:
            log.error("call %s: dial status for an unknown leg", params.get("CallSid", "-"))
            twiml = self._requeue_twiml(params)
        return web.Response(text=twiml, content_type="application/xml")

    async def _ws_ticket(self, request: web.Request) -> web.Response:
        viewer = await self.viewer(request)
        ticket = await self.ws_tickets.issue(viewer["name"] if viewer else None)
        return web.json_response(
            {"ticket": ticket, "expires_in": int(self.ws_tickets.ttl_s)}, headers={"Cache-Control": "no-store"}
        )

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        agent: str | None
        if "Authorization" in request.headers:
            viewer = await self.viewer(request)
            agent = viewer["name"] if viewer else None
        else:
            valid, agent = await self.ws_tickets.redeem(request.query.get("ticket"))
            if not valid:
                raise web.HTTPUnauthorized(text="missing, used or expired WebSocket ticket (POST /api/agent/ws-ticket)")
        skill = request.query.get("skill") or None
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await ws.prepare(request)
        self._sockets[ws] = (skill, agent)
        try:
            last = await self._push(ws, skill, agent)
            while not ws.closed:
                try:
                    msg = await ws.receive(timeout=self.refresh_s)
                except TimeoutError:
                    # Nothing changes in storage when a scheduled callback falls due, so look again.
                    snap = await self.snapshot(skill, agent)
                    if _signature(snap) != last:
                        await ws.send_json(snap)
                        last = _signature(snap)
                    continue
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT and msg.data == "refresh":
                    last = await self._push(ws, skill, agent)
        finally:
            self._sockets.pop(ws, None)
        return ws


class CrmNotWritten(Exception):
    def __init__(self, message: str, leg: LegRow) -> None:
        super().__init__(message)
        self.leg = leg


# -- helpers -------------------------------------------------------------------------------
def _claim(storage: Storage, table: Any, row_id: int, agent: str, status: str) -> bool:
    """Atomic compare-and-set: only one agent can move an escalation out of 'waiting'."""
    with storage.engine.begin() as conn:
        result = conn.execute(
            update(table).where(table.c.id == row_id, table.c.status == "waiting").values(status=status, agent=agent)
        )
        return (result.rowcount or 0) == 1


def _escalation_item(row: EscalationRow, now: datetime, legs: list[LegRow], names: dict[str, str]) -> dict[str, Any]:
    payload = row.get("payload") or {}
    missed = [leg for leg in legs if leg["status"] in ag.MISSED or leg["status"] == "failed"]
    item: dict[str, Any] = {
        "kind": "escalation",
        "id": row["id"],
        "call_sid": row["call_sid"],
        "queue": row["queue"],
        "priority": int(row["priority"] or 0),
        "status": row["status"],
        "trigger": row["trigger"],
        "trigger_words": TRIGGER_WORDS.get(row["trigger"], row["trigger"].replace("_", " ")),
        "reason": row["reason"],
        "since": row["at"],
        "waiting_s": _waiting(row["at"], now),
        # Put back by a transfer nobody answered: served before anyone newer, whatever their priority.
        "requeued": bool(missed) and row["status"] == "waiting",
        "missed_by": [names.get(leg["agent"], leg["agent"]) for leg in missed],
    }
    item.update({k: payload.get(k) for k in CONTEXT_FIELDS})
    return item


def _sla_level(waiting_s: float, sla_s: float) -> str:
    """ok (green) under half the SLA, warn (amber) up to it, breach (red) past it."""
    if waiting_s >= sla_s:
        return "breach"
    return "warn" if waiting_s >= sla_s / 2 else "ok"


def _unavailable_words(agent: AgentRow) -> str:
    if agent["status"] == "busy":
        return "You are on a call: finish it before taking another."
    if agent["status"] == "wrap_up":
        return "Save the wrap-up of your last call first."
    reason = agent.get("status_reason")
    return f"You are away ({reason})." if reason else "You are away: set yourself available to take callers."


def _taken_words(record: EscalationRow) -> str:
    if record["status"] == "abandoned":
        return "The caller hung up before the call was taken."
    if record.get("agent"):
        return f"{record['agent']} already took this caller."
    return f"This caller is no longer waiting ({record['status']})."


def _twilio_words(exc: TwilioApiError) -> str:
    if exc.code == 21220:
        return "The caller hung up before the call reached you."
    if exc.code in (21211, 21214, 13223, 13224):
        return "Your phone could not be dialled (its number looks wrong); the caller is back in the queue."
    if exc.transient:
        return "The phone network did not answer; the caller is back in the queue. Try again."
    return "The call could not be moved to you; the caller is back in the queue. Try again."


def _caller_words(record: EscalationRow | None) -> str:
    payload: dict[str, Any] = (record.get("payload") or {}) if record else {}
    name = payload.get("customer_name") or "the caller"
    tier = payload.get("customer_tier")
    return f"{name} ({tier})" if tier else str(name)


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _waiting(since: Any, now: datetime) -> float:
    start = _parse_time(since)
    return round(max(0.0, (now - start).total_seconds()), 1) if start else 0.0


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _signature(snap: Queue) -> str:
    return json.dumps([(i["kind"], i["id"], i["status"], i.get("requeued")) for i in snap["items"]])


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else ""


def _int_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPBadRequest(text="id must be an integer") from None


def _leg_id(request: web.Request) -> int:
    try:
        return int(request.query.get("leg", ""))
    except ValueError:
        raise web.HTTPBadRequest(text="leg must be an integer") from None


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


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
