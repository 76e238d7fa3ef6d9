"""Builds a CallContext turn by turn, keeping its counters the way the call session does.

The session's real detectors (sentiment, phrase spotting, loudness) live elsewhere; here a caller's
words are spotted with plain word lists so each test reads like the call it describes.
"""

from __future__ import annotations

import re

from flows.context import CallContext, Customer, Turn

NEGATIVE_PHRASES = ("unacceptable", "ridiculous", "cancel", "useless", "fed up", "terrible", "waste of time")
LEGAL_WORDS = ("sue", "lawyer", "solicitor", "court", "legal action")
SHOUTING_SPL_DB = 78.0
ANSWER_THRESHOLD = 0.85


def _spot(words: tuple[str, ...], text: str) -> list[str]:
    found = []
    for w in words:
        found += [w] * len(re.findall(rf"\b{re.escape(w)}\b", text.lower()))
    return found


class ScriptedCall:
    def __init__(self, call_sid: str = "CA0001", customer: Customer | None = None, region: str = "us_west") -> None:
        self.ctx = CallContext(call_sid=call_sid, caller="+14155550100", region=region, customer=customer)

    def caller(
        self,
        text: str,
        *,
        intent: str | None = None,
        confidence: float | None = None,
        sentiment: float = 0.0,
        spl: float = 62.0,
        channel: str = "voice",
    ) -> ScriptedCall:
        ctx = self.ctx
        ctx.turns.append(
            Turn(
                len(ctx.turns),
                channel,
                text,
                intent=intent,
                confidence=confidence,
                sentiment=sentiment,
                loudness_spl_db=spl,
            )
        )
        ctx.sentiment_trend.append(sentiment)
        negative, legal = _spot(NEGATIVE_PHRASES, text), _spot(LEGAL_WORDS, text)
        ctx.negative_phrases += negative
        ctx.legal_words += legal
        shouting = spl > SHOUTING_SPL_DB
        ctx.shouting_turns += shouting
        ctx.frustration = min(1.0, ctx.frustration + 0.2 * len(negative) + 0.3 * len(legal) + 0.2 * shouting)
        return self

    def bot_asks_again(self) -> ScriptedCall:
        self.ctx.clarifications += 1
        return self

    def backend_failed(self) -> ScriptedCall:
        self.ctx.backend_failures += 1
        return self


def maria() -> Customer:
    """The demo CRM's VIP customer (ivr/data/demo_crm.json)."""
    return Customer(
        customer_id="C1001",
        name="Maria Garcia",
        phone_e164="+14155550100",
        lifetime_value=7240.5,
        tier="vip",
        preferred_channel="voice",
        tickets=[
            {"date": "2024-11-03", "type": "late_delivery", "resolved": True},
            {"date": "2025-01-19", "type": "billing_dispute", "resolved": False},
        ],
    )


def james() -> Customer:
    return Customer(
        customer_id="C1002", name="James Chen", lifetime_value=845.0, tier="standard", preferred_channel="sms"
    )
