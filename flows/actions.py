"""What the flow engine asks the call session to do. The session turns these into audio and carrier commands.

The set is deliberately small; the session must handle every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ListenMode = Literal["voice", "dtmf", "both"]
SlotKind = Literal["digits", "order_number", "email", "date", "yes_no"]


@dataclass(frozen=True, slots=True)
class Say:
    """Speak `text`. `prompt_id` is set only for fixed prompts (no placeholders) the TTS cache can pre-render."""

    text: str
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class ValueShape:
    """The whole value a collect step accepts, as the step reads it from speech: listening ends the turn as soon
    as the caller has said a value that fits and could not go on (ivr/slot_listening.py)."""

    value: Literal["digits", "alnum"]
    pattern: str | None = None
    max_digits: int | None = None


@dataclass(frozen=True, slots=True)
class Listen:
    """The input the engine expects next.

    pci=True: keypad only; the session must not transcribe, record or log audio until the next Listen.
    """

    mode: ListenMode
    slot: str | None = None
    max_digits: int | None = None
    finish_on: str = "#"
    pci: bool = False
    timeout_s: float = 8.0
    expects: SlotKind | None = None
    """What kind of answer the step waits for; listening sets its endpointing from it (ivr/slot_listening.py)."""
    vocabulary: str | None = None
    """Words the recogniser should expect here (the flow's and the step's `asr_vocabulary`)."""
    shape: ValueShape | None = None
    """The value a collect step reads from speech, when it has a length or a pattern that says it is whole."""
    keys: tuple[str, ...] = ()
    """A menu's keys: a caller who says one of them ("two", "option two") has answered in full."""


@dataclass(frozen=True, slots=True)
class Escalate:
    """Hand the call to a person. `reason` is plain words for the agent; `trigger` is the metrics label."""

    reason: str
    trigger: str
    intent_guess: str | None = None
    confidence: float | None = None
    queue: str = "general"


@dataclass(frozen=True, slots=True)
class OfferCallback:
    """A callback has been offered to the caller (a backend was too slow or failed).

    The engine asks the caller itself; when they accept it sets ``ctx.flags["callback_requested"]`` to the
    reason and ends with ``Hangup("callback requested")``. The session may record the offer.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


@dataclass(frozen=True, slots=True)
class SetFlag:
    """Informational: the engine has set ``ctx.flags[name] = value`` (already applied)."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class VerificationEvent:
    """An audit record of a caller verification outcome (already applied to ``ctx.verification``).

    outcome: verified | failed (a wrong entry) | locked (too many) | unavailable (the check itself failed).
    Never carries the secret; the session records it as a call event.
    """

    outcome: Literal["verified", "failed", "locked", "unavailable"]
    method: str
    attempt: int
    attempts_allowed: int


Action = Say | Listen | Escalate | OfferCallback | Hangup | SetFlag | VerificationEvent
