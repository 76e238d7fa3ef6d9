"""Prometheus metrics, one registry per server (no global state, so tests can run many servers)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

SENTIMENT_BUCKETS = (-0.6, -0.2, 0.2, 0.6, 1.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("ivr_active_calls", "Calls with an open media stream", registry=r)
        self.calls_total = Counter("ivr_calls", "Calls started", registry=r)
        self.calls_ended = Counter("ivr_calls_ended", "Calls ended, by outcome", ["outcome"], registry=r)
        self.frames_in = Counter("ivr_frames_in", "Inbound media frames", registry=r)
        self.frames_out = Counter("ivr_frames_out", "Outbound media frames (160 bytes each)", registry=r)
        self.errors = Counter("ivr_errors", "Errors by kind", ["kind"], registry=r)
        self.turn_latency = Histogram(
            "ivr_turn_latency_seconds",
            "Per-turn latency breakdown: endpoint_wait, asr, understanding, tts_first_frame, total",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_greeting = Histogram(
            "ivr_first_greeting_seconds",
            "From stream start to the first greeting frame sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter("ivr_barge_ins", "Bot playback interrupted by the caller", ["kind"], registry=r)
        # How turns end, and how often the caller was not done: the live counterpart of the bench's split count,
        # what endpoint_silence_ms and the turn-end policy are tuned by (ivr/listening.py).
        self.turn_ends = Counter(
            "ivr_turn_ends",
            "Caller turns ended, by what ended them: silence, words (the turn-end policy) or max_length",
            ["by"],
            registry=r,
        )
        self.turns_resumed = Counter(
            "ivr_turns_resumed",
            "Caller turns ended, by what ended them, after which the caller went on speaking at once (a cut-off)",
            ["by"],
            registry=r,
        )
        self.escalations = Counter("ivr_escalations", "Escalations by trigger", ["trigger"], registry=r)
        self.draining = Gauge("ivr_draining", "1 while the server drains after SIGTERM", registry=r)
        # What an autoscaler reads off each node: its calls (above), its ASR backlog, its CPU (process_cpu_*),
        # and what callers want and how they feel (intents and sentiment per turn).
        self.node = Info("ivr_node", "This node of the fleet", registry=r)
        self.asr_pending = Gauge("ivr_asr_pending", "Transcriptions running or waiting for a worker", registry=r)
        self.worker_restarts = Gauge(
            "ivr_model_worker_restarts",
            "Whisper or Piper worker processes that died and were started again, by model",
            ["model"],
            registry=r,
        )
        self.intents = Counter("ivr_turn_intents", "Turns by the intent understood", ["intent"], registry=r)
        self.sentiment = Histogram(
            "ivr_turn_sentiment",
            "Caller sentiment per turn (-1 angry .. 1 pleased)",
            buckets=SENTIMENT_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def capacity(self, node_id: str, asr_pending: Callable[[], float]) -> None:
        self.node.info({"node_id": node_id})
        self.asr_pending.set_function(asr_pending)

    def model_workers(self, model: str, restarts: Callable[[], float]) -> None:
        """Exports how often `model`'s worker processes were started again (each restart is also logged)."""
        self.worker_restarts.labels(model).set_function(restarts)

    def observe_turn(self, intent: str | None, sentiment: float | None) -> None:
        self.intents.labels(intent or "none").inc()
        if sentiment is not None:
            self.sentiment.observe(sentiment)

    def render(self) -> bytes:
        return generate_latest(self.registry)
