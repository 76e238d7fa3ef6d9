"""Legal and negative-phrase triggers read context, through the real scorer, tracker and policy: a name is not a
lawsuit, holding power of attorney is not a threat, one word said again is not mounting anger, and a complaint
that Whisper tiny heard as "an acceptable" is still a complaint."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from escalation_script import ANSWER_THRESHOLD, SHOUTING_SPL_DB, james

from flows.context import CallContext
from ivr.escalation import EscalationConfig, EscalationDecision, EscalationPolicy
from ivr.frustration import FrustrationTracker
from models.sentiment import SentimentScorer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def scorer() -> SentimentScorer:
    return SentimentScorer()


def after(scorer: SentimentScorer, *said: str) -> tuple[CallContext, EscalationDecision | None]:
    ctx = CallContext(call_sid="CA-context", caller="+14155550123", region="us_west", customer=james())
    tracker = FrustrationTracker(SHOUTING_SPL_DB)
    policy = EscalationPolicy(
        EscalationConfig(), shouting_spl_db=SHOUTING_SPL_DB, confidence_threshold=ANSWER_THRESHOLD, clock=lambda: NOW
    )
    for text in said:
        tracker.update(ctx, scorer.score(text), loudness_spl_db=62.0)
    return ctx, policy.evaluate(ctx, last_intent="billing_problem")


def test_my_wife_sue_called_about_the_bill_does_not_escalate(scorer: SentimentScorer) -> None:
    ctx, decision = after(scorer, "my wife Sue called about the bill", "Sue said it was too high")
    assert ctx.legal_words == []
    assert decision is None


@pytest.mark.parametrize("threat", ["I'll sue you for this", "we are going to sue", "I'm suing your company"])
def test_a_real_threat_to_sue_still_escalates_as_legal(scorer: SentimentScorer, threat: str) -> None:
    _, decision = after(scorer, "you overcharged me again", threat)
    assert decision is not None and decision.trigger == "legal"


def test_power_of_attorney_is_not_a_legal_threat(scorer: SentimentScorer) -> None:
    _, decision = after(scorer, "I have power of attorney for my father's account", "I'm calling about his bill")
    assert decision is None


def test_cancel_said_three_times_counts_once(scorer: SentimentScorer) -> None:
    ctx, decision = after(scorer, "cancel", "cancel please", "I said cancel")
    assert set(ctx.negative_phrases) == {"cancel"}
    assert decision is None or decision.trigger != "negative_phrases"


def test_three_different_negative_phrases_still_escalate(scorer: SentimentScorer) -> None:
    _, decision = after(scorer, "this is unacceptable", "honestly ridiculous", "absolutely useless")
    assert decision is not None and decision.trigger == "negative_phrases"


def test_an_acceptable_right_after_a_complaint_stays_a_complaint(scorer: SentimentScorer) -> None:
    heard = scorer.score("This is an acceptable. I am so angry.")
    assert "unacceptable" in heard.negative_phrases and heard.compound < -0.5
    # A real "an acceptable <noun>" is left alone.
    assert "unacceptable" not in scorer.score("That is an acceptable offer").negative_phrases
