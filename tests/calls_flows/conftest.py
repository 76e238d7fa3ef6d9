"""Helpers for whole live calls through the server with the real models: a caller who can listen for a while
or until a reply, what the bot said (Whisper as the listener), and what reached the demo CRM."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from audio import mulaw
from audio.resample import resample
from telephony.simcaller import CallResult, SimulatedCaller, Step


@dataclass(frozen=True)
class HearFor:
    """Listen until `seconds` of the bot's audio have played (counted from the start of the call)."""

    seconds: float
    timeout_s: float = 30.0


@dataclass(frozen=True)
class WaitForReply:
    """Wait until the bot answers the caller's last input and `heard_s` of that answer have played."""

    heard_s: float = 0.5
    timeout_s: float = 20.0


class Caller(SimulatedCaller):
    """The simulated phone with three more script steps: HearFor, WaitForReply and Do."""

    async def _run_step(self, step: Step | HearFor | WaitForReply) -> None:  # type: ignore[override]
        if isinstance(step, HearFor):
            await self._until(lambda: self.played_s() >= step.seconds, step.timeout_s, f"hear {step.seconds} s")
        elif isinstance(step, WaitForReply):
            since = self._last_voiced_sent or 0.0

            def answered() -> bool:
                reply = [s for s in self._segments if s.start_t >= since]
                return bool(reply) and self.now() - reply[0].start_t >= step.heard_s

            await self._until(answered, step.timeout_s, "a reply")
        else:
            await super()._run_step(step)

    def played_s(self) -> float:
        now = self.now()
        return sum(max(0.0, min(s.end_t, now) - s.start_t) for s in self._segments)

    async def _until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if self._closed_by_server or time.monotonic() > deadline:
                self._note("caller", f"gave up waiting for {what}")
                return
            await asyncio.sleep(0.02)


def caller_input_times(result: CallResult, marker: str) -> list[float]:
    """When the caller did something whose timeline text contains `marker` ('presses 1', 'plays parcel')."""
    return [e.t for e in result.timeline if e.who == "caller" and marker in e.what]


def heard_between(result: CallResult, start: float, end: float) -> bytes:
    """The bot audio of segments that started in [start, end), as mu-law."""
    return b"".join(bytes(s.audio) for s in result.segments if start <= s.start_t < end)


async def transcribe_phone_audio(shared_models: Any, audio: bytes) -> str:
    """What a listener hears in the bot's mu-law audio, lower-cased words (Whisper, as a human stand-in)."""
    assert audio, "no bot audio to transcribe"
    pcm = mulaw.decode(audio).astype(np.float32) / 32768.0
    transcript = await shared_models.asr.transcribe(resample(pcm, 8000, 16000), "test-listener")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", transcript.text.lower()).split())


async def crm_journal(server: Any) -> list[dict[str, str]]:
    """Every request the demo CRM received (method, path with query, body)."""
    async with aiohttp.ClientSession() as http, http.get(server.crm_url + "/_stats") as resp:
        assert resp.status == 200
        return (await resp.json())["journal"]
