"""Everything a server process shares between calls, built once: models, storage, flows, escalation.

No module-level state: a test can build several `Services` (for example one per database).
Models are the expensive part (Whisper, Piper, the intent classifier), so `Models` can be built
once and handed to many `Services`.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from flows.context import CallContext
from flows.engine import FlowEngine
from flows.gateway import BackendGateway
from flows.schema import Flow
from ivr.admission import BUSY_PROMPTS, Admission
from ivr.config import Settings
from ivr.escalation import EscalationPolicy
from ivr.escalator import Escalator
from ivr.fleet import CONTEXT_JSON, Fleet
from ivr.frustration import FrustrationTracker
from ivr.metrics import Metrics
from ivr.nodes import NodeRegistry, open_nodes
from ivr.privacy import ContextStore, ErasureRequest, same_phone
from ivr.prompts import SERVER_PROMPTS
from ivr.storage import AsyncStorage, Storage
from ivr.storage_queue import SPOOL_FILE
from models.asr import AsrService, Transcriber
from models.asr_pool import ProcessTranscriber
from models.blas import one_blas_thread
from models.intent import IntentClassifier, IntentModels, IntentResult, answer_threshold, parse_yes_no
from models.regions import Region, get_region
from models.sentiment import SentimentScorer
from models.tts import Synthesizer, TtsService
from models.tts_pool import ProcessSynthesizer
from telephony.twilio_rest import TwilioRest

if TYPE_CHECKING:
    from ivr.agent_desk import AgentDesk
    from ivr.callback_dialler import CallbackDialler
    from ivr.callbacks import CallbackService

log = logging.getLogger("ivr.services")


@dataclass
class Models:
    """Loaded once per process (or per test session) and shared by every call."""

    asr: AsrService
    tts: TtsService
    intents: IntentModels  # one classifier per flow, built on first use
    sentiment: SentimentScorer

    @classmethod
    def load(cls, settings: Settings) -> Models:
        one_blas_thread()  # this process runs the intent embeddings, and Whisper too when `processes` is 0
        a = settings.asr
        # Worker processes (models/asr_pool.py) when configured: one utterance per process at a time.
        transcriber = ProcessTranscriber(a, a.processes) if a.processes else Transcriber(a)
        t = settings.tts
        # Piper in worker processes too (models/tts_pool.py): its Python would otherwise share the frames' GIL.
        synth = ProcessSynthesizer(t, t.processes) if t.processes else Synthesizer(t)
        return cls(
            asr=AsrService(transcriber, workers=max(a.workers, a.processes), queue_size=a.queue_size),
            tts=TtsService(
                synth, workers=t.processes or t.workers, cache_dir=t.cache_dir or settings.data_dir / "tts-cache"
            ),
            intents=IntentModels(cache_dir=settings.intent_cache_dir or settings.data_dir / "intent-cache"),
            sentiment=SentimentScorer(),
        )

    async def close(self) -> None:
        await self.asr.close()
        await self.tts.close()
        if isinstance(self.asr.transcriber, ProcessTranscriber):
            await asyncio.to_thread(self.asr.transcriber.close)
        if isinstance(self.tts.synth, ProcessSynthesizer):
            await asyncio.to_thread(self.tts.synth.close)


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


class LiveCall(Protocol):
    """What the process needs of a call in progress (the session, seen from outside)."""

    transferring: bool
    ctx: CallContext | None

    async def close(self, reason: str, *, outcome: str | None = None) -> None: ...


@dataclass
class Services:
    settings: Settings
    models: Models
    db: AsyncStorage
    metrics: Metrics
    flow: Flow
    region: Region
    gateway: BackendGateway
    escalator: Escalator
    frustration: FrustrationTracker
    desk: AgentDesk | None = None
    callbacks: CallbackService | None = None
    dialler: CallbackDialler | None = None  # places booked callbacks (runs while the app does)
    nodes: NodeRegistry | None = None
    fleet: Fleet | None = None  # live state shared through Redis; None on a single node
    admission: Admission | None = None  # capacity check (ivr/admission.py); None: every call is served
    sessions: dict[str, LiveCall] = field(default_factory=dict)
    # Context of calls handed to an agent, kept so a transfer back resumes with everything known; bounded
    # by age and count (`Settings.privacy`) so no caller's transcript or CRM data stays in memory for good.
    contexts: ContextStore[CallContext] = field(default_factory=lambda: ContextStore(3600.0, 1000))
    _background: set[asyncio.Task[None]] = field(default_factory=set)

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
        return answer_threshold(self.flow.industry, self.settings.industry)

    def set_public_url(self, url: str) -> None:
        """Where Twilio and callers reach us (known only once a port-0 server has bound)."""
        self.settings.public_url = url
        self.escalator.public_url = url
        if self.desk is not None:
            self.desk.public_url = url.rstrip("/")
        if self.callbacks is not None:
            self.callbacks.public_url = url.rstrip("/")

    async def erase_personal_data(self, request: ErasureRequest, *, actor: str) -> dict[str, int]:
        """Erasure in this process and in the database: live calls of that customer or number are ended
        (nothing more is recorded about them), kept contexts are dropped, then every record is erased.
        Returns the database counts plus `live_calls` and `contexts`."""

        def matches(ctx: CallContext | None) -> bool:
            if ctx is None:
                return False
            if request.phone and same_phone(ctx.caller, request.phone):
                return True
            customer = ctx.customer
            if customer is None:
                return False
            if request.customer_id and customer.customer_id == request.customer_id:
                return True
            return bool(request.phone and same_phone(customer.phone_e164, request.phone))

        live = [s for s in list(self.sessions.values()) if matches(s.ctx)]
        for session in live:
            await session.close("erased", outcome="error")
        dropped = self.contexts.remove_where(matches)
        if self.fleet is not None:
            dropped += await self.fleet.erase_contexts(lambda raw: matches(CONTEXT_JSON.validate_json(raw)))
        in_memory = {"live_calls": len(live), "contexts": dropped}
        counts = await self.db.erase(request, actor=actor, in_memory=in_memory)
        return {**counts, **in_memory}

    def mark_transferring(self, call_sid: str) -> None:
        if not self.mark_transferring_here(call_sid) and self.fleet is not None:
            # The call's media is on another node: tell it before the carrier is asked to move the call.
            task = asyncio.get_running_loop().create_task(self.fleet.transferring(call_sid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def keep_context(self, call_sid: str, ctx: CallContext) -> None:
        """Keeps an escalated call's context for its return from an agent, on whichever node it returns to."""
        self.contexts[call_sid] = ctx
        if self.fleet is not None:
            try:
                await self.fleet.keep_context(
                    call_sid, CONTEXT_JSON.dump_json(ctx), self.settings.privacy.context_ttl_s
                )
            except Exception:
                log.exception("call %s: could not share the call's context with the fleet", call_sid)

    async def resume_context(self, call_sid: str) -> CallContext | None:
        """The context a returning call left, kept here or by another node (taken: it is used once)."""
        ctx = self.contexts.pop(call_sid, None)
        if self.fleet is None:
            return ctx
        try:
            shared = await self.fleet.take_context(call_sid)
        except Exception:
            log.exception("call %s: could not fetch the call's context from the fleet", call_sid)
            return ctx
        if ctx is None and shared is not None:
            ctx = CONTEXT_JSON.validate_json(shared)
        return ctx

    def mark_transferring_here(self, call_sid: str) -> bool:
        session = self.sessions.get(call_sid)
        if session is not None:
            session.transferring = True
        return session is not None

    async def transferred_elsewhere(self, call_sid: str) -> bool:
        """Whether an agent on another node took this call (its `stop` is then a transfer, not a hang-up)."""
        if self.fleet is None:
            return False
        try:
            return await self.fleet.is_transferring(call_sid)
        except Exception:
            log.exception("call %s: could not ask the fleet whether the call was transferred", call_sid)
            return False

    def new_nlu(self) -> RegionalNlu:
        return RegionalNlu(self.models.intents.classifier(self.flow.intent_set().spec()), self.region)

    def new_engine(self, nlu: RegionalNlu, call_log: logging.LoggerAdapter[logging.Logger]) -> FlowEngine:
        return FlowEngine(
            self.flow,
            nlu,
            self.gateway,
            answer_threshold=self.answer_threshold,
            log=call_log,  # type: ignore[arg-type]
        )

    def prompts_to_warm(self) -> list[str]:
        """Everything said word for word, rendered before the first call: prompts, and the fixed words that
        templated replies begin with, registered as lead-ins (`models.speech_text.LeadIns`): said from the
        cache, so only the words that vary in a reply are rendered during a call."""
        lead_ins = [p for start in self.flow.reply_starts() for p in self.models.tts.lead_ins.add(start)]
        return list(self.flow.fixed_prompts().values()) + list(SERVER_PROMPTS) + list(BUSY_PROMPTS) + lead_ins

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        close = getattr(self.gateway, "close", None)
        if close is not None:
            await close()
        await asyncio.to_thread(self.db.close)


def _restarts(pool: ProcessTranscriber | ProcessSynthesizer) -> float:
    return pool.workers.restarts


def open_storage(settings: Settings) -> AsyncStorage:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    return AsyncStorage(storage, settings.storage, spool_path=settings.data_dir / SPOOL_FILE)


async def build_all(
    settings: Settings,
    *,
    models: Models | None = None,
    db: AsyncStorage | None = None,
    gateway: BackendGateway | None = None,
    twilio: TwilioRest | None = None,
) -> Services:
    """Builds everything the server needs; `models`, `db`, `gateway` and the carrier's REST client can be
    shared or replaced (tests)."""
    from flows.backends import BackendMetrics, HttpBackendGateway
    from flows.cli import load_flow
    from ivr.agent_desk import AgentDesk
    from ivr.callback_dialler import CallbackDialler
    from ivr.callbacks import CallbackService
    from ivr.clock import LoopClock

    if models is None:
        models = await asyncio.to_thread(Models.load, settings)
    metrics = Metrics()
    if db is None:
        db = await asyncio.to_thread(open_storage, settings)
    db.on_error = lambda op, exc: metrics.errors.labels("storage").inc()
    flow = load_flow(settings.flow)
    if twilio is None:
        twilio = TwilioRest(
            settings.twilio_account_sid, settings.twilio_auth_token, api_base_url=settings.twilio_api_base_url
        )
    services = Services(
        contexts=ContextStore(settings.privacy.context_ttl_s, settings.privacy.context_max),
        settings=settings,
        models=models,
        db=db,
        metrics=metrics,
        flow=flow,
        region=get_region(settings.region),
        gateway=gateway or HttpBackendGateway(settings.backends, metrics=BackendMetrics(metrics.registry)),
        escalator=Escalator(
            EscalationPolicy(
                settings.escalation,
                shouting_spl_db=settings.audio.shouting_spl_db,
                confidence_threshold=answer_threshold(flow.industry, settings.industry),
            ),
            db,
            settings.public_url,
            line_queue=flow.queue,
        ),
        frustration=FrustrationTracker(shouting_spl_db=settings.audio.shouting_spl_db),
    )
    services.desk = AgentDesk(
        db,
        twilio,
        api_token=settings.api_token,
        public_url=settings.public_url,
        config=settings.desk,
        webhook_token=settings.twilio_auth_token,
        insecure_dev=settings.insecure_dev,
        crm=services.gateway,
        metrics=metrics,
        on_transfer=services.mark_transferring,
    )
    services.callbacks = CallbackService(
        db,
        twilio,
        settings.public_url,
        settings.twilio_from_number,
        on_change=services.desk.notify,
        config=settings.callbacks,
        hours=settings.queue_hours,
        api_token=settings.api_token,
        authorize=services.desk.viewer,
    )
    services.dialler = CallbackDialler(
        services.callbacks,
        clock=LoopClock(),
        desk=services.desk,
        auth_token=settings.twilio_auth_token,
        insecure_dev=settings.insecure_dev,
    )
    services.escalator.desk, services.escalator.callbacks = services.desk, services.callbacks
    services.escalator.hours = settings.queue_hours
    services.nodes = open_nodes(settings.node_id, settings.redis_url, settings.cluster)
    metrics.capacity(settings.node_id, lambda: models.asr.pending)
    # getattr: tests run the server on fake models, which have no worker processes.
    for model, pool in (("asr", getattr(models.asr, "transcriber", None)), ("tts", getattr(models.tts, "synth", None))):
        if isinstance(pool, (ProcessTranscriber, ProcessSynthesizer)):
            metrics.model_workers(model, functools.partial(_restarts, pool))
    if settings.redis_url:
        services.fleet = Fleet.connect(settings.node_id, settings.redis_url)
        services.fleet.on_queue_changed = services.desk.push_local
        services.fleet.on_transferring = services.mark_transferring_here
        services.fleet.on_alert = services.desk.alert_local
        services.fleet.on_error = metrics.errors.labels("fleet").inc
        services.desk.broadcast = services.fleet.queue_changed
        services.desk.broadcast_alert = services.fleet.alert
        services.desk.ws_tickets = services.fleet.desk_tickets(services.desk.ws_tickets.ttl_s)
        services.callbacks.requests = services.fleet.request_counter("callback-link")
        await services.fleet.start()
    services.admission = Admission(settings.admission, metrics)
    await models.tts.warm(services.prompts_to_warm())
    # The flow's intent classifier is built before the first call, off the loop (embedding its phrases).
    await asyncio.to_thread(models.intents.classifier, flow.intent_set().spec())
    # Models and tables live for the whole process: keep them out of the collector's full sweeps, which
    # otherwise stall the event loop (and so outbound audio) for tens of milliseconds under load.
    gc.freeze()
    return services
