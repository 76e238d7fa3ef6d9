"""Admission control: a node at capacity turns a new call away politely instead of slowing every call down.

Two cores serve a measured number of calls with replies inside the latency target (`make bench`); past that,
every call's replies get slower and its audio starts to stall. So at `max_calls` live calls, a new caller hears
a short "all our lines are busy", gets a text with a link to choose a callback time (`ivr/callbacks.py`) when
we can reach them, and the call ends. The capacity and the calls turned away are Prometheus metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field

from flows.context import CallContext
from ivr.call_log import CallLog
from ivr.callbacks import CallbackService
from ivr.metrics import Metrics

BUSY_LINE = (
    "Sorry, all our lines are busy right now. We're texting you a link to choose a time for us to call you back. "
    "Goodbye."
)
BUSY_LINE_NO_SMS = "Sorry, all our lines are busy right now. Please call again in a few minutes. Goodbye."
BUSY_PROMPTS = (BUSY_LINE, BUSY_LINE_NO_SMS)


class AdmissionConfig(BaseModel):
    """`Settings.admission` (``IVR_ADMISSION__...``)."""

    max_calls: int = Field(
        20,
        ge=1,
        description="live calls one node serves; one more hears 'all lines are busy' and is offered a callback "
        "(the largest level of `make bench` within the 1.2 s p95 on a shared 2-core machine; measure yours)",
    )


class Admission:
    """The capacity check of one server process, with its metrics."""

    def __init__(self, config: AdmissionConfig, metrics: Metrics) -> None:
        self.config = config
        self.capacity = Gauge(
            "ivr_capacity_calls",
            "Live calls this node admits (Settings.admission.max_calls)",
            registry=metrics.registry,
        )
        self.capacity.set(config.max_calls)
        self.refused = Counter(
            "ivr_calls_refused_busy",
            "Calls turned away at capacity (told all lines are busy)",
            registry=metrics.registry,
        )

    def admits(self, live_calls: int) -> bool:
        """Whether a call is served, given the live calls counting it."""
        return live_calls <= self.config.max_calls


class BusySpeech(Protocol):
    def say(self, text: str, *, prompt_id: str | None = None) -> None: ...

    async def finished(self, *, limit_s: float = 30.0) -> None: ...


async def turn_away(
    admission: Admission,
    callbacks: CallbackService | None,
    ctx: CallContext,
    call: CallLog,
    speech: BusySpeech,
    hang_up: Callable[..., Awaitable[None]],
    *,
    live_calls: int,
) -> None:
    """Tells the caller every line is busy, texts them a callback link if we can, and ends the call."""
    admission.refused.inc()
    sms = callbacks is not None and bool(ctx.caller)
    call.record("refused_busy", {"live_calls": live_calls, "capacity": admission.config.max_calls, "sms": sms})
    call.log.warning(
        "all lines busy (%d live calls, capacity %d): call turned away", live_calls, admission.config.max_calls
    )
    speech.say(BUSY_LINE if sms else BUSY_LINE_NO_SMS, prompt_id="all_lines_busy")
    if sms and callbacks is not None:
        try:
            await callbacks.request(ctx.call_sid, ctx.caller or "", None, {"trigger": "all_lines_busy"})
        except Exception as exc:  # noqa: BLE001 - the caller still hears the busy line and the call ends cleanly
            call.error("callback_sms_failed", f"{type(exc).__name__}: {exc}")
    await speech.finished()
    await hang_up("all_lines_busy", outcome="busy")
