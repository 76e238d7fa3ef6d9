"""Each escalation trigger fires from a call built turn by turn, with a reason an agent can read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from escalation_script import ANSWER_THRESHOLD, SHOUTING_SPL_DB, ScriptedCall, james, maria

from flows.context import Customer
from ivr.escalation import EscalationConfig, EscalationPolicy, priority_for

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def policy(**cfg) -> EscalationPolicy:
    return EscalationPolicy(
        EscalationConfig(**cfg),
        shouting_spl_db=SHOUTING_SPL_DB,
        confidence_threshold=ANSWER_THRESHOLD,
        clock=lambda: NOW,
    )


def test_calm_call_is_not_escalated():
    call = ScriptedCall(customer=maria())
    call.caller("hi where is my parcel", intent="track_order", confidence=0.95, sentiment=0.1)
    call.caller("the espresso machine", intent="track_order", confidence=0.91)
    call.caller("great thanks that's all", intent="goodbye", confidence=0.97, sentiment=0.6)
    assert policy().evaluate(call.ctx, last_intent="goodbye") is None


def test_three_negative_phrases_escalate_with_the_phrases_in_the_reason():
    call = ScriptedCall(customer=james())
    call.caller("where is my parcel it's a week late", intent="track_order", confidence=0.93, sentiment=-0.3)
    call.caller("this is unacceptable", intent="delivery_problem", confidence=0.7, sentiment=-0.6)
    call.caller("honestly this is ridiculous", intent="delivery_problem", confidence=0.8, sentiment=-0.7)
    assert policy().evaluate(call.ctx, last_intent="delivery_problem") is None  # two is not enough
    call.caller("just cancel it", intent="cancel_order", confidence=0.9, sentiment=-0.8)
    decision = policy().evaluate(call.ctx, last_intent="cancel_order")
    assert decision.trigger == "negative_phrases"
    assert decision.reason == "Caller said 'unacceptable', 'ridiculous' and 'cancel' (3 negative phrases)"
    assert decision.queue == "delivery"
    assert decision.goodwill_offer is None


def test_negative_phrase_threshold_comes_from_config():
    call = ScriptedCall(customer=james())
    call.caller("useless, ridiculous, unacceptable", intent="billing_problem", confidence=0.9)
    assert policy(negative_phrases=4).evaluate(call.ctx) is None
    assert policy(negative_phrases=3).evaluate(call.ctx).trigger == "negative_phrases"


def test_legal_words_are_counted_and_win_over_negativity():
    call = ScriptedCall(customer=james())
    call.caller("you overcharged me again", intent="billing_problem", confidence=0.92, sentiment=-0.5)
    call.caller("I will sue you for this", intent="billing_problem", confidence=0.6, sentiment=-0.8)
    decision = policy().evaluate(call.ctx, last_intent="billing_problem")
    assert decision.trigger == "legal"
    assert decision.reason == "Customer mentioned 'sue'"
    call.caller("this is unacceptable and ridiculous, useless, I'll sue", intent="billing_problem", confidence=0.6)
    decision = policy().evaluate(call.ctx, last_intent="billing_problem")
    assert decision.trigger == "legal"
    assert decision.reason.startswith("Customer mentioned 'sue' twice. Also: caller said 'unacceptable'")
    assert "negative_phrases" in decision.other_triggers
    assert decision.queue == "billing"


def test_shouting_escalates_only_while_it_lasts():
    call = ScriptedCall(customer=james())
    call.caller("where is my order", intent="track_order", confidence=0.9)
    call.caller("WHERE IS MY ORDER", intent="track_order", confidence=0.9, spl=86.4)
    decision = policy().evaluate(call.ctx, last_intent="track_order")
    assert decision.trigger == "shouting"
    assert "about 86 dB SPL" in decision.reason and "above 78 dB" in decision.reason
    assert decision.queue == "delivery"
    calm = ScriptedCall(customer=james())
    calm.caller("WHERE IS MY ORDER", intent="track_order", confidence=0.9, spl=84.0)
    calm.caller("sorry, order A1001", intent="track_order", confidence=0.9, spl=64.0)
    assert calm.ctx.shouting_turns == 1
    assert policy().evaluate(calm.ctx, last_intent="track_order") is None


def test_low_confidence_escalates_after_one_clarification():
    call = ScriptedCall(customer=james())
    call.caller("it's about the thing with the charge", intent="billing_problem", confidence=0.41)
    assert policy().evaluate(call.ctx) is None  # first ask again
    call.bot_asks_again()
    call.caller("the thing from last month", intent="billing_problem", confidence=0.48)
    decision = policy().evaluate(call.ctx)
    assert decision.trigger == "low_confidence"
    assert decision.reason == (
        "Still unsure what the caller wants after 1 clarifying question: "
        "best guess 'billing_problem' at 48% confidence (needs 85%)"
    )
    assert decision.queue == "billing"
    # a confident answer after the clarification keeps the call with the machine
    call.caller("I was charged twice on my bill", intent="billing_problem", confidence=0.94)
    assert policy().evaluate(call.ctx) is None


def test_flow_can_ask_for_low_confidence_escalation():
    call = ScriptedCall(customer=james())
    call.caller("mm", intent="out_of_scope", confidence=0.2)
    decision = policy().evaluate(call.ctx, flow_request="low_confidence")
    assert decision.trigger == "low_confidence"
    assert decision.queue == "general"


def test_caller_asking_for_a_person_keeps_the_topic_queue():
    call = ScriptedCall(customer=james())
    call.caller("my card is gone", intent="lost_card", confidence=0.93)
    call.caller("can I talk to a real person", intent="speak_to_agent", confidence=0.96)
    decision = policy().evaluate(call.ctx, last_intent="speak_to_agent")
    assert decision.trigger == "caller_request"
    assert decision.reason == "Caller asked to speak to a person"
    assert decision.queue == "cards"
    flow = policy().evaluate(call.ctx, flow_request="caller pressed 0 for an operator")
    assert flow.trigger == "caller_request"
    assert "caller pressed 0 for an operator" in flow.reason


def test_repeated_backend_failure_escalates():
    call = ScriptedCall(customer=james())
    call.caller("I want to pay my bill", intent="pay_bill", confidence=0.95)
    call.backend_failed()
    assert policy().evaluate(call.ctx, last_intent="pay_bill") is None
    call.backend_failed()
    decision = policy().evaluate(call.ctx, last_intent="pay_bill")
    assert decision.trigger == "backend_failure"
    assert "failed twice" in decision.reason
    assert decision.queue == "billing"


def test_frustrated_vip_goes_to_priority_queue_with_a_time_limited_offer():
    call = ScriptedCall(customer=maria())
    call.caller("my espresso machine is late again", intent="delivery_problem", confidence=0.93, sentiment=-0.5)
    call.caller("this is terrible, I'm fed up", intent="delivery_problem", confidence=0.9, sentiment=-0.8)
    assert call.ctx.frustration <= 0.7
    assert policy().evaluate(call.ctx, last_intent="delivery_problem") is None
    call.caller(
        "I have been waiting all week, what a waste of time", intent="delivery_problem", confidence=0.9, spl=80.0
    )
    assert call.ctx.frustration > 0.7
    decision = policy().evaluate(call.ctx, last_intent="delivery_problem")
    assert decision.trigger == "vip_frustrated"
    assert decision.queue == "priority"
    assert "lifetime value 7,240" in decision.reason
    assert decision.goodwill_offer is not None and decision.goodwill_offer.text
    assert decision.goodwill_offer.expires_at == NOW + timedelta(hours=24)
    # The same call from a low-value customer is handled on its own merits (the shouting), without an offer.
    plain = ScriptedCall(customer=james())
    for turn in call.ctx.turns:
        plain.caller(turn.text, intent=turn.intent, confidence=turn.confidence, spl=turn.loudness_spl_db)
    other = policy().evaluate(plain.ctx, last_intent="delivery_problem")
    assert other.trigger == "shouting" and other.goodwill_offer is None and other.queue == "delivery"


def test_priority_orders_by_tier_then_frustration():
    def customer(tier: str) -> Customer:
        return replace(james(), tier=tier)

    waiting = {
        "vip calm": priority_for(customer("vip"), 0.1),
        "gold furious": priority_for(customer("gold"), 0.95),
        "gold calm": priority_for(customer("gold"), 0.1),
        "standard furious": priority_for(customer("standard"), 1.0),
        "unknown caller calm": priority_for(None, 0.0),
    }
    served = sorted(waiting, key=waiting.get, reverse=True)
    assert served == ["vip calm", "gold furious", "gold calm", "standard furious", "unknown caller calm"]

    angry_vip = ScriptedCall(customer=replace(maria(), lifetime_value=900.0))
    angry_vip.caller("I'll sue", intent="billing_problem", confidence=0.9)
    angry_std = ScriptedCall(customer=james())
    angry_std.caller("I'll sue", intent="billing_problem", confidence=0.9)
    assert policy().evaluate(angry_vip.ctx).priority > policy().evaluate(angry_std.ctx).priority


@pytest.mark.parametrize(
    ("intent", "queue"),
    [("top_up", "billing"), ("change_plan", "billing"), ("return_refund", "delivery"),
     ("check_balance", "cards"), ("out_of_scope", "general"), (None, "general")],
)  # fmt: skip
def test_queue_follows_the_callers_topic(intent, queue):
    call = ScriptedCall(customer=james())
    call.caller("get me a human", intent=intent, confidence=0.9)
    assert policy().evaluate(call.ctx, last_intent="speak_to_agent").queue == queue
