"""Everything a server process shares between calls, built once: models, storage, flows, escalation.

No module-level state: a test can build several `Services` (for example one per database).
Models are the expensive part (Whisper, Piper, the intent classifier), so `Models` can be built
once and handed to many `Services`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from flows.actions import Escalate
from flows.context import CallContext
from flows.engine import FlowEngine
from flows.schema import Flow
from ivr.config import Settings
from ivr.escalation import (
    TRIGGERS,
    EscalationDecision,
    EscalationPolicy,
    priority_for,
    queue_for_intent,
    topic_intent,
)
from ivr.handoff import build_handoff
from ivr.metrics import Metrics
from ivr.storage import AsyncStorage, Storage
from models.asr import AsrService, Transcriber
from models.intent import IntentClassifier, IntentResult, parse_yes_no
from models.regions import Region, get_region
from models.sentiment import FrustrationTracker, SentimentScorer
from models.tts import Synthesizer, TtsService

if TYPE_CHECKING:
    from ivr.agent_desk import AgentDesk
    from ivr.callbacks import CallbackService
    from ivr.session import CallSession

log = logging.getLogger("ivr.services")

HOLD_LINE = (
    "I'm passing you to a colleague who will see everything we've talked about. "
    "Please stay on the line. We're also texting you a link, in case you'd rather we call you back."
)
HOLD_REMINDER = "Thanks for holding. A colleague will be with you shortly."
ASR_RETRY = "Sorry, I missed that. Could you say it again?"
HOLD_LINE_NO_SMS = "I'm passing you to a colleague who will see everything we've talked about. Please stay on the line."


# The flow engine's escalation triggers, in the policy's vocabulary (others are kept as the flow named them).
FLOW_TRIGGERS = {
    "no_match": "low_confidence",
    "backend_timeout": "backend_failure",
    "backend_error": "backend_failure",
}


@dataclass
class Models:
    """Loaded once per process (or per test session) and shared by every call."""

    asr: AsrService
    tts: TtsService
    intents: IntentClassifier
    sentiment: SentimentScorer

    @classmethod
    def load(cls, settings: Settings) -> Models:
        transcriber = Transcriber(settings.asr)
        synth = Synthesizer(settings.tts)
        return cls(
            asr=AsrService(transcriber, workers=settings.asr.workers, queue_size=settings.asr.queue_size),
            tts=TtsService(synth, workers=settings.tts.workers, cache_dir=settings.data_dir / "tts-cache"),
            intents=IntentClassifier.load(),
            sentiment=SentimentScorer(),
        )

    async def close(self) -> None:
        await self.asr.close()
        await self.tts.close()


class RegionalNlu:
    """The flow engine's view of understanding: regional wording normalised before intent detection.

    One per call. The last answer is kept, so the escalation check and the flow classify a turn once.
    """

    def __init__(self, classifier: IntentClassifier, region: Region) -> None:
        self.classifier = classifier
        self.region = region
        self._last: tuple[str, IntentResult] | None = None

    def classify(self, text: str) -> IntentResult:
        if self._last is not None and self._last[0] == text:
            return self._last[1]
        result = self.classifier.classify(self.region.normalise(text))
        self._last = (text, result)
        return result

    def yes_no(self, text: str) -> bool | None:
        return parse_yes_no(text)


@dataclass
class Services:
    settings: Settings
    models: Models
    db: AsyncStorage
    metrics: Metrics
    flow: Flow
    region: Region
    gateway: Any  # flows.gateway.BackendGateway
    policy: EscalationPolicy
    frustration: FrustrationTracker
    desk: AgentDesk | None = None
    callbacks: CallbackService | None = None
    sessions: dict[str, CallSession] = field(default_factory=dict)
    # Context of calls handed to an agent, kept so a transfer back resumes with everything known.
    contexts: dict[str, CallContext] = field(default_factory=dict)

    @property
    def asr(self) -> AsrService:
        return self.models.asr

    @property
    def tts(self) -> TtsService:
        return self.models.tts

    @property
    def sentiment(self) -> SentimentScorer:
        return self.models.sentiment

    @property
    def answer_threshold(self) -> float:
        industry = self.flow.industry if self.flow.industry != "general" else self.settings.industry
        return 0.92 if industry in ("finance", "healthcare") else self.settings.answer_threshold

    def set_public_url(self, url: str) -> None:
        """Where Twilio and callers reach us (known only once a port-0 server has bound)."""
        self.settings.public_url = url
        if self.desk is not None:
            self.desk.public_url = url.rstrip("/")
        if self.callbacks is not None:
            self.callbacks.public_url = url.rstrip("/")

    def mark_transferring(self, call_sid: str) -> None:
        session = self.sessions.get(call_sid)
        if session is not None:
            session.transferring = True

    def new_nlu(self) -> RegionalNlu:
        return RegionalNlu(self.models.intents, self.region)

    def new_engine(self, nlu: RegionalNlu, call_log: logging.LoggerAdapter) -> FlowEngine:
        return FlowEngine(
            self.flow,
            nlu,
            self.gateway,
            answer_threshold=self.answer_threshold,
            log=call_log,  # type: ignore[arg-type]
        )

    def fixed_prompts(self) -> list[str]:
        return list(self.flow.fixed_prompts().values()) + [HOLD_LINE, HOLD_LINE_NO_SMS, ASR_RETRY, HOLD_REMINDER]

    # -- escalation -------------------------------------------------------------------------
    def policy_check(self, ctx: CallContext, last_intent: str | None = None) -> EscalationDecision | None:
        if ctx.escalated:
            return None
        decision = self.policy.evaluate(ctx, last_intent=last_intent)
        if decision is not None and decision.queue == "general" and self.flow.queue:
            decision = replace(decision, queue=self.flow.queue)  # no topic yet: the line's own queue
        return decision

    def policy_from_flow(self, ctx: CallContext, action: Escalate) -> EscalationDecision:
        """The flow asked for a person. Its reason (the most specific words) is what the agent reads;
        the policy still picks queue, priority and any goodwill offer."""
        trigger = FLOW_TRIGGERS.get(action.trigger, action.trigger)
        decision = (
            self.policy.evaluate(ctx, last_intent=action.intent_guess, flow_request=trigger)
            if (trigger in TRIGGERS)
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

    async def escalate(self, session: CallSession, decision: EscalationDecision) -> None:
        """Structured handoff: the agent desk gets the whole context; the caller hears why and what next."""
        ctx = session.ctx
        assert ctx is not None and session.call_sid is not None
        transcript_url = f"{self.settings.public_url.rstrip('/')}/api/calls/{session.call_sid}"
        handoff = build_handoff(ctx, decision, transcript_url=transcript_url)
        payload = handoff.model_dump(mode="json")
        session.record("escalation", {"trigger": decision.trigger, "reason": decision.reason, "queue": decision.queue})
        session.log.info("escalating (%s): %s", decision.trigger, decision.reason)
        sms = self.callbacks is not None and bool(ctx.caller)
        session.say(HOLD_LINE if sms else HOLD_LINE_NO_SMS)
        if self.desk is not None:
            await self.desk.enqueue(
                session.call_sid,
                trigger=decision.trigger,
                reason=decision.reason,
                queue=decision.queue,
                priority=decision.priority,
                payload=payload,
            )
        else:
            await self.db.add_escalation(
                session.call_sid,
                trigger=decision.trigger,
                reason=decision.reason,
                queue=decision.queue,
                priority=decision.priority,
                payload=payload,
            )
        if sms and self.callbacks is not None:
            try:
                await self.callbacks.request(
                    session.call_sid,
                    ctx.caller or "",
                    ctx.customer.customer_id if ctx.customer else None,
                    payload,
                )
            except Exception as exc:  # noqa: BLE001 - the caller is still on hold for an agent
                session.error("callback_sms_failed", f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        close = getattr(self.gateway, "close", None)
        if close is not None:
            await close()
        await asyncio.to_thread(self.db.close)


def open_storage(settings: Settings) -> AsyncStorage:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    return AsyncStorage(storage)


async def build_all(
    settings: Settings, *, models: Models | None = None, db: AsyncStorage | None = None, gateway: Any = None
) -> Services:
    """Builds everything the server needs; `models`, `db` and `gateway` can be shared or replaced (tests)."""
    from flows.backends import BackendMetrics, HttpBackendGateway
    from flows.cli import load_flow
    from ivr.agent_desk import AgentDesk
    from ivr.callbacks import CallbackService
    from telephony.twilio_rest import TwilioRest

    models = models or await asyncio.to_thread(Models.load, settings)
    metrics = Metrics()
    db = db or await asyncio.to_thread(open_storage, settings)
    db.on_error = lambda op, exc: metrics.errors.labels("storage").inc()
    flow = load_flow(settings.flow)
    twilio = TwilioRest(
        settings.twilio_account_sid, settings.twilio_auth_token, api_base_url=settings.twilio_api_base_url
    )
    services = Services(
        settings=settings,
        models=models,
        db=db,
        metrics=metrics,
        flow=flow,
        region=get_region(settings.region),
        gateway=gateway or HttpBackendGateway(settings.backends, metrics=BackendMetrics(metrics.registry)),
        policy=EscalationPolicy(
            settings.escalation,
            shouting_spl_db=settings.audio.shouting_spl_db,
            confidence_threshold=settings.answer_threshold,
        ),
        frustration=FrustrationTracker(shouting_spl_db=settings.audio.shouting_spl_db),
    )
    services.policy.confidence_threshold = services.answer_threshold
    services.desk = AgentDesk(
        db,
        twilio,
        api_token=settings.api_token,
        agent_number=settings.agent_number,
        public_url=settings.public_url,
        metrics=metrics,
        on_transfer=services.mark_transferring,
    )
    services.callbacks = CallbackService(
        db, twilio, settings.public_url, settings.twilio_from_number, on_change=services.desk.notify
    )
    await models.tts.warm(services.fixed_prompts())
    # Models and tables live for the whole process: keep them out of the collector's full sweeps, which
    # otherwise stall the event loop (and so outbound audio) for tens of milliseconds under load.
    gc.freeze()
    return services
