"""Limits on one call's life: a stream that has gone silent on the wire, and a call that has gone on too long.

Twilio sends a media frame every 20 ms for as long as the call is up, silence included, so no media frame at all
for `inactivity_timeout_s` means the stream is dead (a lost tunnel, a carrier that stopped sending without `stop`);
marks and keys alone do not keep it alive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel, Field

from ivr.clock import Clock


class CallLimitsConfig(BaseModel):
    """`Settings.calls` (``IVR_CALLS__...``)."""

    inactivity_timeout_s: float = Field(
        15.0, gt=0, description="no media frame from the carrier for this long ends the call"
    )
    max_call_s: float = Field(2 * 3600.0, gt=0, description="a call still up after this long is ended")


class CallWatchdog:
    """Ends a call (`end(reason)`) when its stream goes quiet or it reaches its maximum length."""

    def __init__(self, config: CallLimitsConfig, clock: Clock, end: Callable[[str], Awaitable[None]]) -> None:
        self.config = config
        self._clock = clock
        self._end = end
        self._started_at = clock.now()
        self.last_frame_at = self._started_at

    def frame(self) -> None:
        """A media frame from the carrier: the stream is alive."""
        self.last_frame_at = self._clock.now()

    async def run(self) -> None:
        cfg = self.config
        while True:
            now = self._clock.now()
            if now - self._started_at >= cfg.max_call_s:
                await self._end("max_call_length")
                return
            if now - self.last_frame_at >= cfg.inactivity_timeout_s:
                await self._end("stream_inactive")
                return
            next_check = min(self._started_at + cfg.max_call_s, self.last_frame_at + cfg.inactivity_timeout_s)
            await self._clock.sleep(max(0.001, next_check - now))
