"""The hold line: a caller waiting for an agent hears where they stand, and is offered a callback.

Every `hold_announce_every_s` of the queue (`ivr.queue_hours.QueueHours`), whether or not the caller
speaks, the line says the caller's place in the queue and, when we can text them, "press 1 and we will
call you back instead". Once they have waited `offer_callback_after_s` (overflow) the link is texted
without being asked for, once, and they may stay on. Pressing 1 texts the link, takes the caller out of
the live queue and ends the call politely. The line falls silent as soon as the caller is no longer
waiting (an agent accepted, or they booked from the link).

Runs on the call's clock (`ivr.clock`), so tests run it on virtual time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flows.context import CallContext
from ivr.clock import Clock
from ivr.prompts import (
    CALLBACK_NOT_SENT,
    CALLBACK_OFFER,
    CALLBACK_OVERFLOW,
    CALLBACK_TAKEN,
    HOLD_REMINDER,
    callback_booked,
    queue_position,
)
from ivr.queue_hours import QueueHours

if TYPE_CHECKING:
    from ivr.agent_desk import AgentDesk
    from ivr.callbacks import CallbackService


class HoldingCall(Protocol):
    """What the hold line needs of a live call."""

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    def say(self, text: str) -> None: ...

    def record(self, kind: str, data: dict[str, object]) -> None: ...

    def error(self, kind: str, message: str) -> None: ...

    async def leave(self, reason: str) -> None:
        """Let what is being said finish, then hang up (the caller chose a callback)."""


@dataclass
class HoldLine:
    call: HoldingCall
    ctx: CallContext
    queue: str
    hours: QueueHours
    payload: dict[str, Any]
    desk: AgentDesk | None = None
    callbacks: CallbackService | None = None
    texted: bool = False
    done: bool = False

    @property
    def can_offer(self) -> bool:
        return self.callbacks is not None and bool(self.ctx.caller)

    def greet(self) -> None:
        if self.can_offer:
            self.call.say(CALLBACK_OFFER)

    async def run(self, clock: Clock) -> None:
        """Announces at the queue's interval until the caller leaves the queue."""
        started = clock.now()
        task = asyncio.current_task()
        while not self.done:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancel asyncio.wait_for swallowed (3.11) still ends the line
            await clock.sleep(self.hours.hold_announce_every_s)
            if self.done:
                return
            position = await self.position()
            if position == 0:
                await self._left_queue()
                return
            waited = clock.now() - started
            if self.can_offer and not self.texted and waited >= self.hours.offer_callback_after_s:
                if await self._text("overflow"):
                    self.call.record("callback_overflow", {"waited_s": round(waited, 1), "queue": self.queue})
                    self.call.say(CALLBACK_OVERFLOW)
                    continue
            self.call.say(queue_position(position) if position is not None else HOLD_REMINDER)
            if self.can_offer:
                self.call.say(CALLBACK_OFFER)
            self.call.record("hold_announcement", {"position": position, "waited_s": round(waited, 1)})

    async def _left_queue(self) -> None:
        """No longer waiting: an agent took the call (nothing to say), or the caller booked from the link
        while holding (say when we will call, and let them go)."""
        if not self.texted or self.callbacks is None:
            return
        try:
            row = await self.callbacks.for_call(self.ctx.call_sid)
        except Exception as exc:  # noqa: BLE001 - the caller is no longer queued either way
            self.call.error("hold_callback_lookup", f"{type(exc).__name__}: {exc}")
            return
        if row is None or row["status"] != "booked":
            return
        self.done = True
        self.call.record("callback_booked_on_hold", {"callback_id": row["id"]})
        self.call.say(callback_booked(self.callbacks.when_words(row) or "the time you picked"))
        await self.call.leave("callback_booked")

    async def position(self) -> int | None:
        """1-based place among the waiting callers of this queue; 0 when no longer waiting; None if unknown."""
        if self.desk is None:
            return None
        try:
            snapshot = await self.desk.snapshot(self.queue)
        except Exception as exc:  # noqa: BLE001 - the caller still hears a reminder
            self.call.error("hold_position", f"{type(exc).__name__}: {exc}")
            return None
        mine = [i for i, item in enumerate(snapshot["items"]) if item.get("call_sid") == self.ctx.call_sid]
        return mine[0] + 1 if mine else 0

    async def pressed(self, digits: str) -> None:
        """A key on hold: 1 takes the callback offer; anything else is ignored."""
        if self.done or not digits.startswith("1") or not self.can_offer:
            return
        if not await self._text("offer", leave_queue=True):
            self.call.say(CALLBACK_NOT_SENT)
            return
        self.done = True
        self.call.record("callback_taken", {"queue": self.queue})
        self.call.say(CALLBACK_TAKEN)
        await self.call.leave("callback_requested")

    async def _text(self, why: str, *, leave_queue: bool = False) -> bool:
        """Texts the callback link (once per call: a second request returns the first row)."""
        assert self.callbacks is not None
        customer_id = self.ctx.customer.customer_id if self.ctx.customer else None
        try:
            row = await self.callbacks.request(
                self.ctx.call_sid,
                self.ctx.caller or "",
                customer_id,
                self.payload,
                leave_queue=leave_queue,
                why=why,
            )
        except Exception as exc:  # noqa: BLE001 - the caller is still on hold for an agent
            self.call.error("callback_sms_failed", f"{type(exc).__name__}: {exc}")
            return False
        self.texted = True
        if row["status"] == "failed":
            self.call.error("callback_sms_failed", str(row.get("error")))
            return False
        return True
