"""When to hand a call to a person, which queue gets it, and how urgently.

`EscalationPolicy.evaluate` is pure: it reads the call's `CallContext` and returns an
`EscalationDecision` (or None). The call session decides when to ask (after each turn, not while
the call already sits with an agent) and records the decision with `ivr.handoff.build_handoff`.

Check order, most important first; the first trigger that fires names the escalation and the
others that also fired are appended to the reason so the agent sees the whole picture:

1. legal            a legal dispute goes to a person at once, and never gets an improvised offer
2. vip_frustrated   predictive: a high-value customer getting frustrated goes to the priority queue
                    with a time-limited goodwill offer, before they have to ask
3. shouting         the caller is shouting now (last turn over the SPL threshold)
4. negative_phrases enough negative phrases in the call
5. caller_request   the caller (or the flow on their behalf) asked for a person
6. backend_failure  our systems failed repeatedly, so the machine cannot help
7. low_confidence   still unsure what the caller wants after a clarification
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from flows.context import CallContext, Customer
from models.intent import ANSWER_THRESHOLD


class EscalationConfig(BaseModel):
    """`Settings.escalation` (``IVR_ESCALATION__...``)."""

    negative_phrases: int = 3
    vip_lifetime_value: float = 5000.0
    vip_frustration: float = 0.7
    backend_failures: int = 2
    unclear_intent_weekly_threshold: int = 100
    # Failures in a row of speech recognition / synthesis that hand the caller to a person.
    asr_failures: int = 3
    tts_failures: int = 2


TRIGGERS = (
    "legal",
    "vip_frustrated",
    "shouting",
    "negative_phrases",
    "caller_request",
    "backend_failure",
    "low_confidence",
)

# Which skill queue handles an intent; anything else goes to "general".
INTENT_QUEUES: dict[str, str] = {
    "billing_problem": "billing",
    "pay_bill": "billing",
    "top_up": "billing",
    "change_plan": "billing",
    "track_order": "delivery",
    "delivery_problem": "delivery",
    "return_refund": "delivery",
    "cancel_order": "delivery",
    "lost_card": "cards",
    "check_balance": "cards",
}
PRIORITY_QUEUE = "priority"
# Intents that say nothing about the caller's topic: routing looks past them to the last real one
# ("where's my parcel" ... "get me a person" still belongs with delivery).
_META_INTENTS = frozenset({"speak_to_agent", "goodbye", "out_of_scope"})
# Tier decides the band (a gold caller waits behind a vip), frustration orders callers within it.
TIER_RANK: dict[str, int] = {"standard": 1, "gold": 2, "vip": 3}
_FRUSTRATION_SPAN = 99


@dataclass(frozen=True)
class GoodwillOffer:
    text: str  # what the agent can offer, in words
    expires_at: datetime


@dataclass(frozen=True)
class EscalationDecision:
    trigger: str  # one of TRIGGERS
    reason: str  # plain words for the agent
    queue: str  # billing | delivery | cards | general | priority
    priority: int  # higher is served first
    goodwill_offer: GoodwillOffer | None = None
    other_triggers: tuple[str, ...] = ()  # triggers that also fired, in check order


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _counted(words: list[str]) -> list[str]:
    """["sue", "sue", "lawyer"] -> ["'sue' twice", "'lawyer'"], in first-mention order."""
    counts = Counter(w.strip().lower() for w in words if w and w.strip())
    return [f"'{w}'" if n == 1 else f"'{w}' {_times(n)}" for w, n in counts.items()]


def topic_intent(ctx: CallContext, last_intent: str | None = None) -> str | None:
    """The caller's most recent real topic: `last_intent`, else the turns newest first, skipping meta intents."""
    candidates = [last_intent] + [t.intent for t in reversed(ctx.turns)]
    for intent in candidates:
        if intent and intent not in _META_INTENTS:
            return intent
    return None


def queue_for_intent(intent: str | None) -> str:
    return INTENT_QUEUES.get(intent or "", "general")


def priority_for(customer: Customer | None, frustration: float) -> int:
    """vip 300-399, gold 200-299, standard (and unknown callers) 100-199; frustration orders within a tier."""
    tier = (customer.tier if customer else "standard") or "standard"
    rank = TIER_RANK.get(tier.strip().lower(), TIER_RANK["standard"])
    f = min(max(float(frustration), 0.0), 1.0)
    return rank * 100 + round(f * _FRUSTRATION_SPAN)


class EscalationPolicy:
    def __init__(
        self,
        cfg: EscalationConfig,
        *,
        shouting_spl_db: float,
        confidence_threshold: float = ANSWER_THRESHOLD,
        goodwill_text: str = "a $20 credit on the account as an apology",
        goodwill_valid_for: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """`confidence_threshold`: pass `Services.answer_threshold` (`models.intent.answer_threshold`)."""
        self.cfg = cfg
        self.shouting_spl_db = shouting_spl_db
        self.confidence_threshold = confidence_threshold
        self.goodwill_text = goodwill_text
        self.goodwill_valid_for = goodwill_valid_for
        self.clock = clock

    def evaluate(
        self, ctx: CallContext, *, last_intent: str | None = None, flow_request: str | None = None
    ) -> EscalationDecision | None:
        """`flow_request`: the flow engine's Escalate trigger (a name in TRIGGERS) or its reason text.

        A known trigger name forces that trigger; any other text counts as the caller asking for a
        person, with the flow's words in the reason.
        """
        flow_trigger = flow_request if flow_request in TRIGGERS else None
        flow_text = flow_request.strip() if flow_request and flow_trigger is None else None
        fired: list[tuple[str, str]] = []
        for trigger in TRIGGERS:
            reason = getattr(self, f"_check_{trigger}")(ctx, last_intent, flow_trigger, flow_text)
            if reason is None and trigger == flow_trigger:
                reason = f"The flow asked to escalate ({trigger.replace('_', ' ')})"
            if reason is not None:
                fired.append((trigger, reason))
        if not fired:
            return None
        trigger, reason = fired[0]
        if len(fired) > 1:
            reason += ". Also: " + "; ".join(r[0].lower() + r[1:] for _, r in fired[1:])
        offer = None
        if trigger == "vip_frustrated":
            queue = PRIORITY_QUEUE
            offer = GoodwillOffer(self.goodwill_text, self._now() + self.goodwill_valid_for)
        else:
            queue = queue_for_intent(topic_intent(ctx, last_intent))
        return EscalationDecision(
            trigger=trigger,
            reason=reason,
            queue=queue,
            priority=priority_for(ctx.customer, ctx.frustration),
            goodwill_offer=offer,
            other_triggers=tuple(t for t, _ in fired[1:]),
        )

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    # -- one method per trigger: a plain-words reason when it fires, else None ----------------
    def _check_legal(self, ctx: CallContext, *_: object) -> str | None:
        if not ctx.legal_words:
            return None
        return "Customer mentioned " + _join(_counted(ctx.legal_words))

    def _check_vip_frustrated(self, ctx: CallContext, *_: object) -> str | None:
        c = ctx.customer
        if c is None or c.lifetime_value <= self.cfg.vip_lifetime_value:
            return None
        if ctx.frustration <= self.cfg.vip_frustration:
            return None
        return (
            f"High-value customer (lifetime value {c.lifetime_value:,.0f}) is getting frustrated "
            f"(frustration {ctx.frustration:.2f} of 1)"
        )

    def _check_shouting(self, ctx: CallContext, *_: object) -> str | None:
        # Only while it lasts: a caller who shouted once and calmed down stays with the machine.
        spl = ctx.last_loudness_spl_db
        if spl is None and ctx.turns:
            spl = ctx.turns[-1].loudness_spl_db
        if ctx.shouting_turns <= 0 or spl is None or spl <= self.shouting_spl_db:
            return None
        turns = "1 turn" if ctx.shouting_turns == 1 else f"{ctx.shouting_turns} turns"
        return (
            f"Caller is shouting: about {spl:.0f} dB SPL on the last turn "
            f"(shouting above {self.shouting_spl_db:.0f} dB), loud in {turns}"
        )

    def _check_negative_phrases(self, ctx: CallContext, *_: object) -> str | None:
        # Distinct phrases: "cancel ... cancel ... cancel" is one business word said again, not mounting anger.
        n = len(set(ctx.negative_phrases))
        if n < self.cfg.negative_phrases:
            return None
        return f"Caller said {_join(_counted(ctx.negative_phrases))} ({n} negative phrases)"

    def _check_caller_request(
        self, ctx: CallContext, last_intent: str | None, flow_trigger: str | None, flow_text: str | None
    ) -> str | None:
        if flow_text:
            return f"The flow handed over: {flow_text}"
        if last_intent == "speak_to_agent" or flow_trigger == "caller_request":
            return "Caller asked to speak to a person"
        return None

    def _check_backend_failure(self, ctx: CallContext, *_: object) -> str | None:
        if ctx.backend_failures < self.cfg.backend_failures:
            return None
        return (
            f"Our systems failed {_times(ctx.backend_failures)} during the call, "
            "so the caller could not be served automatically"
        )

    def _check_low_confidence(
        self, ctx: CallContext, last_intent: str | None, flow_trigger: str | None, flow_text: str | None
    ) -> str | None:
        last = ctx.turns[-1] if ctx.turns else None
        unsure = (
            ctx.clarifications >= 1
            and last is not None
            and last.confidence is not None
            and last.confidence < self.confidence_threshold
        )
        if not unsure and flow_trigger != "low_confidence":
            return None
        n = ctx.clarifications
        text = "Still unsure what the caller wants"
        if n:
            text += f" after {n} clarifying question{'s' if n > 1 else ''}"
        if last is not None and last.intent and last.confidence is not None:
            text += (
                f": best guess '{last.intent}' at {last.confidence:.0%} confidence "
                f"(needs {self.confidence_threshold:.0%})"
            )
        return text
