"""What the agent sees when a call is handed over: a versioned payload, published as JSON Schema.

The schema lives in docs/handoff.schema.json (regenerate with ``python -m ivr.handoff``); a test
keeps it equal to `handoff_json_schema()`. Bump `SCHEMA_VERSION` on any incompatible change.

Card digits never reach the payload: caller input is masked where it enters (`flows.pci`: keys, transcripts,
turns), and the payload is masked again as it is built (defence in depth).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.context import CallContext
from flows.pci import mask_card_numbers
from ivr.escalation import EscalationDecision, topic_intent

SCHEMA_VERSION: Final = "1.0"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "handoff.schema.json"


class IssueRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: str = Field(description="when the issue was raised (ISO date)")
    type: str = Field(description="issue type, e.g. late_delivery, billing_dispute")
    resolved: bool


class GoodwillOfferPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="what the agent may offer, in words")
    expires_at: datetime = Field(description="the offer is void after this time")


class ConversationLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: Literal["caller", "bot"]
    text: str = Field(description="what was said, or for keys 'pressed 0'; card numbers masked")


class Handoff(BaseModel):
    """Everything an agent needs so the caller never repeats themselves."""

    model_config = ConfigDict(extra="forbid", title="IVR escalation handoff")

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    call_sid: str
    customer_id: str | None = Field(description="null when the caller was not identified")
    lifetime_value: float | None = Field(ge=0)
    customer_tier: str | None
    caller_verified: bool = Field(
        False, description="the caller proved who they are in this call (caller ID alone never counts)"
    )
    verification_method: Literal["pin", "account_digits", "sms_code"] | None = Field(
        None, description="how the caller was verified; null when not verified"
    )
    verification_locked: bool = Field(
        False, description="too many wrong answers: no further attempts this call; verify the caller yourself"
    )
    issue_history: list[IssueRecord]
    sentiment_trend: list[float] = Field(description="per-turn sentiment, -1 (negative) .. 1, oldest first")
    intent_guess: str | None = Field(description="the caller's most recent topic as the AI understood it")
    confidence: float | None = Field(ge=0, le=1, description="intent confidence of the latest turn with an intent")
    last_3_messages: list[str] = Field(max_length=3, description="the caller's last messages, card numbers masked")
    reason: str = Field(description="why the AI escalated, in plain words")
    trigger: str
    preferred_channel: str
    region: str
    transcript_url: str
    queue: str
    priority: int = Field(description="higher is served first")
    goodwill_offer: GoodwillOfferPayload | None
    created_at: datetime
    customer_name: str | None = Field(None, description="the identified customer's name")
    caller_masked: str | None = Field(None, description="the caller's number with all but the last 4 digits hidden")
    conversation: list[ConversationLine] = Field(
        default_factory=list, max_length=8, description="the last exchanges, caller and bot, oldest first"
    )


def _issue_history(ctx: CallContext) -> list[IssueRecord]:
    tickets = ctx.customer.tickets if ctx.customer else []
    return [
        IssueRecord(date=str(t.get("date", "")), type=str(t.get("type", "unknown")), resolved=bool(t.get("resolved")))
        for t in tickets
        if isinstance(t, dict)
    ]


def mask_caller(number: str | None) -> str | None:
    """'+14155550123' -> '+1 ••• ••• 0123': enough for the agent to confirm, not to copy."""
    if not number:
        return None
    digits = "".join(c for c in number if c.isdigit())
    if len(digits) <= 4:
        return "••••"
    prefix = "+" + digits[0] + " " if number.startswith("+") else ""
    return f"{prefix}••• ••• {digits[-4:]}"


def conversation(ctx: CallContext, lines: int = 8) -> list[ConversationLine]:
    out: list[ConversationLine] = []
    for turn in ctx.turns:
        said = mask_card_numbers(turn.text)
        out.append(ConversationLine(speaker="caller", text=f"pressed {said}" if turn.channel == "dtmf" else said))
        if turn.reply:
            out.append(ConversationLine(speaker="bot", text=mask_card_numbers(turn.reply)))
    return out[-lines:]


def build_handoff(
    ctx: CallContext, decision: EscalationDecision, *, transcript_url: str, now: datetime | None = None
) -> Handoff:
    customer = ctx.customer
    intent = topic_intent(ctx)
    confidence = next((t.confidence for t in reversed(ctx.turns) if t.confidence is not None), None)
    trend = list(ctx.sentiment_trend) or [t.sentiment for t in ctx.turns if t.sentiment is not None]
    offer = decision.goodwill_offer
    return Handoff(
        call_sid=ctx.call_sid,
        customer_id=customer.customer_id if customer else None,
        lifetime_value=customer.lifetime_value if customer else None,
        customer_tier=customer.tier if customer else None,
        caller_verified=ctx.verification.verified,
        verification_method=ctx.verification.method if ctx.verification.verified else None,
        verification_locked=ctx.verification.locked,
        issue_history=_issue_history(ctx),
        sentiment_trend=trend,
        intent_guess=intent,
        confidence=confidence,
        last_3_messages=[mask_card_numbers(m) for m in ctx.last_messages(3)],
        reason=mask_card_numbers(decision.reason),
        trigger=decision.trigger,
        preferred_channel=(customer.preferred_channel if customer else None) or "voice",
        region=ctx.region,
        transcript_url=transcript_url,
        queue=decision.queue,
        priority=decision.priority,
        goodwill_offer=GoodwillOfferPayload(text=offer.text, expires_at=offer.expires_at) if offer else None,
        created_at=now or datetime.now(UTC),
        customer_name=(customer.name or None) if customer else None,
        caller_masked=mask_caller(ctx.caller),
        conversation=conversation(ctx),
    )


def handoff_json_schema() -> dict[str, Any]:
    schema = Handoff.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://open-ivr.invalid/schemas/handoff-{SCHEMA_VERSION}.json",
        **schema,
    }


def write_json_schema(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(handoff_json_schema(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_json_schema(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH)
