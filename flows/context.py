"""What the server knows about one call, kept for the call's whole life.

Owned by the call session; read and updated by the flow engine and the escalation policy.
Nothing here is ever reset between turns: context lives as long as the call (and survives a
transfer back from an agent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Channel = Literal["voice", "dtmf"]


@dataclass(slots=True)
class Customer:
    customer_id: str
    name: str = ""
    phone_e164: str | None = None
    email: str | None = None
    match_key: str | None = None  # SHA-256 of the normalised phone or email
    lifetime_value: float = 0.0
    tier: str = "standard"
    preferred_channel: str = "voice"
    orders: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Turn:
    """One exchange: what the caller said or pressed, and what we understood of it."""

    index: int
    channel: Channel
    text: str  # masked already when the slot is PCI-sensitive
    intent: str | None = None
    confidence: float | None = None
    sentiment: float | None = None  # -1 .. 1
    loudness_spl_db: float | None = None
    reply: str = ""


@dataclass(slots=True)
class Verification:
    """Whether and how the caller proved who they are in this call. Never holds the secret itself."""

    verified: bool = False
    method: Literal["pin", "account_digits", "sms_code"] | None = None  # that verified, or the last tried
    failures: int = 0  # wrong entries so far, all methods together
    locked: bool = False  # too many wrong entries: no further attempts in this call


@dataclass(slots=True)
class CallContext:
    call_sid: str
    caller: str | None = None
    region: str = "us_west"
    industry: str = "general"
    customer: Customer | None = None
    slots: dict[str, str] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)
    sentiment_trend: list[float] = field(default_factory=list)
    frustration: float = 0.0  # 0 .. 1, per call, rises with negative phrases, legal words, shouting
    negative_phrases: list[str] = field(default_factory=list)
    legal_words: list[str] = field(default_factory=list)
    shouting_turns: int = 0
    last_loudness_spl_db: float | None = None  # the caller's latest utterance, estimated dB SPL
    long_silences: int = 0
    clarifications: int = 0
    backend_failures: int = 0
    resolved: bool = False  # only a confirmed resolution sets this, never silence
    escalated: bool = False
    verification: Verification = field(default_factory=Verification)
    flags: dict[str, Any] = field(default_factory=dict)

    def last_messages(self, n: int = 3) -> list[str]:
        return [t.text for t in self.turns[-n:]]
