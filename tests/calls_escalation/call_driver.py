"""Driving real calls through the live server until an escalation fires, and reading what it stored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ivr.prompts import HOLD_LINE
from telephony.simcaller import SimulatedCaller

JAMES = "+14155550101"  # standard tier, lifetime value 845


@dataclass(frozen=True)
class Until:
    """Wait (while the line carries silence) until `condition()` holds."""

    condition: Callable[[], Awaitable[bool]]
    timeout_s: float = 25.0
    what: str = "condition"


class Caller(SimulatedCaller):
    """The simulated Twilio caller plus an `Until` step, so a call lasts only as long as the test needs."""

    async def _run_step(self, step: Any) -> None:
        if isinstance(step, Until):
            deadline = time.monotonic() + step.timeout_s
            while not await step.condition():
                if time.monotonic() > deadline or self._closed_by_server:
                    raise AssertionError(
                        f"call {self.call_sid}: timed out waiting for {step.what}; the call so far:\n"
                        + "\n".join(str(e) for e in self._timeline)
                    )
                await asyncio.sleep(0.05)
            return
        await super()._run_step(step)

    def heard(self, audio: bytes) -> bool:
        return audio in self._received


async def escalations_of(server: Any, call_sid: str) -> list[dict[str, Any]]:
    return [e for e in await server.services.db.list_escalations() if e["call_sid"] == call_sid]


def hold_line_audio(server: Any) -> bytes:
    audio = server.services.tts.cached(HOLD_LINE)
    assert audio, "the hold line is not pre-rendered"
    return audio


def escalated_and_on_hold(server: Any, caller: Caller) -> Until:
    """Until the escalation is stored and the caller has heard the first 0.3 s of the hold line."""
    opening = hold_line_audio(server)[:2400]

    async def ready() -> bool:
        return bool(await escalations_of(server, caller.call_sid)) and caller.heard(opening)

    return Until(ready, what="escalation and hold line")
