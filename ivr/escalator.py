"""Escalation behaviour: when a call goes to a person, which queue and why, and what the caller hears.

The policy (`ivr.escalation`) decides from signals; this module acts on a decision: a structured handoff
to the agent desk (the whole context, `ivr.handoff`), a line that says what happens next, and the hold
line (`ivr.hold_line`: place in the queue at an interval, the callback offer, overflow to a texted link).
No SMS goes unasked: only when the caller takes the offer or waits past the queue's threshold. It talks to
the call only through `EscalatingCall`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from flows.actions import Escalate
from flows.context import CallContext
from ivr.escalation import TRIGGERS, EscalationDecision, EscalationPolicy, priority_for, queue_for_intent, topic_intent
from ivr.handoff import build_handoff
from ivr.hold_line import HoldLine
from ivr.prompts import HOLD_LINE
from ivr.queue_hours import QueueHoursConfig
from ivr.storage import AsyncStorage

if TYPE_CHECKING:
    from ivr.agent_desk import AgentDesk
    from ivr.callbacks import CallbackService

# The flow engine's escalation triggers, in the policy's vocabulary (others are kept as the flow named them).
FLOW_TRIGGERS = {
    "no_match": "low_confidence",
    "backend_timeout": "backend_failure",
    "backend_error": "backend_failure",
}


class EscalatingCall(Protocol):
    """What escalation needs of a live call."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    def say(self, text: str) -> None: ...

    def record(self, kind: str, data: dict[str, object]) -> None: ...

    def error(self, kind: str, message: str) -> None: ...

    async def leave(self, reason: str) -> None: ...


@dataclass
class Escalator:
    policy: EscalationPolicy
    db: AsyncStorage
    public_url: str
    line_queue: str | None = None  # the line's own queue, for a request with no topic yet
    desk: AgentDesk | None = None
    callbacks: CallbackService | None = None
    hours: QueueHoursConfig = field(default_factory=QueueHoursConfig)  # per queue: hold announcements, overflow

    def check(self, ctx: CallContext, last_intent: str | None = None) -> EscalationDecision | None:
        """Signals in how the caller speaks (legal words, shouting, anger, a frustrated VIP), before the flow."""
        if ctx.escalated:
            return None
        decision = self.policy.evaluate(ctx, last_intent=last_intent)
        if decision is not None and decision.queue == "general" and self.line_queue:
            decision = replace(decision, queue=self.line_queue)
        return decision

    def from_flow(self, ctx: CallContext, action: Escalate) -> EscalationDecision:
        """The flow asked for a person. Its reason (the most specific words) is what the agent reads;
        the policy still picks queue, priority and any goodwill offer."""
        trigger = FLOW_TRIGGERS.get(action.trigger, action.trigger)
        decision = (
            self.policy.evaluate(ctx, last_intent=action.intent_guess, flow_request=trigger)
            if trigger in TRIGGERS
            else None
        )
        if decision is None:
            intent = topic_intent(ctx, action.intent_guess)
            return EscalationDecision(
                trigger=trigger,
                reason=action.reason,
                queue=action.queue if action.queue != "general" else queue_for_intent(intent),
                priority=priority_for(ctx.customer, ctx.frustration),
            )
        reason = action.reason if decision.trigger == trigger else f"{decision.reason}. Flow: {action.reason}"
        queue = decision.queue if decision.queue != "general" else action.queue  # no topic yet: the line's queue
        return replace(decision, reason=reason[:1].upper() + reason[1:], queue=queue)

    def for_fault(self, ctx: CallContext, trigger: str, reason: str) -> EscalationDecision:
        """We cannot hear or speak to the caller (ASR or TTS failing): a person takes over, on the topic's queue."""
        queue = queue_for_intent(topic_intent(ctx, None))
        if queue == "general" and self.line_queue:
            queue = self.line_queue
        return EscalationDecision(
            trigger=trigger, reason=reason, queue=queue, priority=priority_for(ctx.customer, ctx.frustration)
        )

    async def escalate(self, call: EscalatingCall, ctx: CallContext, decision: EscalationDecision) -> HoldLine:
        """Structured handoff: the agent desk gets the whole context; the caller hears what happens next.
        Returns the call's hold line, for the caller's session to run while they wait."""
        call_id = ctx.call_sid
        handoff = build_handoff(ctx, decision, transcript_url=f"{self.public_url.rstrip('/')}/api/calls/{call_id}")
        payload = handoff.model_dump(mode="json")
        call.record("escalation", {"trigger": decision.trigger, "reason": decision.reason, "queue": decision.queue})
        call.log.info("escalating (%s): %s", decision.trigger, decision.reason)
        call.say(HOLD_LINE)
        d = decision
        if self.desk is not None:
            await self.desk.enqueue(
                call_id, trigger=d.trigger, reason=d.reason, queue=d.queue, priority=d.priority, payload=payload
            )
        else:
            # Spooled if the database is down: the escalation is never what a storage outage costs the caller.
            self.db.submit(
                self.db.sync.add_escalation,
                call_id,
                trigger=d.trigger,
                reason=d.reason,
                queue=d.queue,
                priority=d.priority,
                payload=payload,
            )
        hold = HoldLine(
            call,
            ctx,
            queue=d.queue,
            hours=self.hours.for_queue(d.queue),
            payload=payload,
            desk=self.desk,
            callbacks=self.callbacks,
        )
        hold.greet()
        return hold
