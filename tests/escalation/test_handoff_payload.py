"""The handoff an agent receives: valid against the published schema, complete, and free of card numbers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import jsonschema
import pytest
from escalation_script import SHOUTING_SPL_DB, ScriptedCall, james, maria

from ivr.escalation import EscalationConfig, EscalationPolicy
from ivr.handoff import SCHEMA_PATH, build_handoff, handoff_json_schema

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
CARD = "4111111111111111"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def escalate(call: ScriptedCall, **kw):
    policy = EscalationPolicy(EscalationConfig(), shouting_spl_db=SHOUTING_SPL_DB, clock=lambda: NOW)
    decision = policy.evaluate(call.ctx, **kw)
    assert decision is not None
    return decision, build_handoff(call.ctx, decision, transcript_url=f"/calls/{call.ctx.call_sid}", now=NOW)


def frustrated_vip_call() -> ScriptedCall:
    call = ScriptedCall("CAvip", customer=maria(), region="uk")
    call.caller("where's me parcel", intent="track_order", confidence=0.94, sentiment=-0.2)
    call.caller("it's terrible, I'm fed up", intent="delivery_problem", confidence=0.88, sentiment=-0.7)
    call.caller("this is a waste of time", intent="delivery_problem", confidence=0.9, sentiment=-0.9, spl=81.0)
    call.caller("just get me someone", intent="speak_to_agent", confidence=0.97, sentiment=-0.9)
    return call


def test_committed_schema_file_is_current():
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == handoff_json_schema()


def test_handoff_carries_what_the_agent_needs_and_validates(validator):
    call = frustrated_vip_call()
    decision, handoff = escalate(call, last_intent="speak_to_agent")
    payload = json.loads(handoff.model_dump_json())
    assert list(validator.iter_errors(payload)) == []
    assert payload["schema_version"] == "1.0"
    assert payload["customer_id"] == "C1001" and payload["customer_tier"] == "vip"
    assert payload["lifetime_value"] == 7240.5
    assert payload["issue_history"] == maria().tickets
    assert payload["last_3_messages"] == [t.text for t in call.ctx.turns[-3:]]
    assert payload["sentiment_trend"] == [-0.2, -0.7, -0.9, -0.9]
    assert payload["intent_guess"] == "delivery_problem"  # the topic, not "speak_to_agent"
    assert payload["trigger"] == "vip_frustrated" and payload["queue"] == "priority"
    assert payload["reason"] == decision.reason
    assert payload["goodwill_offer"]["expires_at"].startswith("2025-03-11T12:00:00")
    assert payload["region"] == "uk" and payload["transcript_url"] == "/calls/CAvip"


def test_unknown_caller_handoff_validates(validator):
    call = ScriptedCall("CAanon", customer=None)
    call.caller("agent", intent="speak_to_agent", confidence=0.9)
    _, handoff = escalate(call, last_intent="speak_to_agent")
    payload = json.loads(handoff.model_dump_json())
    assert list(validator.iter_errors(payload)) == []
    assert payload["customer_id"] is None and payload["issue_history"] == []
    assert payload["preferred_channel"] == "voice"


def test_schema_file_rejects_a_payload_of_another_version(validator):
    call = ScriptedCall("CAv", customer=james())
    call.caller("agent please", intent="speak_to_agent", confidence=0.9)
    _, handoff = escalate(call, last_intent="speak_to_agent")
    payload = json.loads(handoff.model_dump_json())
    assert not validator.is_valid({**payload, "schema_version": "2.0"})
    assert not validator.is_valid({**payload, "card_number": CARD})  # no field can be smuggled in
    del payload["reason"]
    assert not validator.is_valid(payload)


@pytest.mark.parametrize(
    "said",
    [f"my card number is {CARD}", "it's 4111 1111 1111 1111", "4111-1111-1111-1111 expiry 12 27",
     "four one one one one one one one one one one one one one one one"],
)  # fmt: skip
def test_card_numbers_never_reach_the_payload(said, validator):
    call = ScriptedCall("CApci", customer=james())
    call.caller("I want to pay my bill", intent="pay_bill", confidence=0.95)
    call.caller(said, intent="pay_bill", confidence=0.5, channel="voice")  # a slip the PCI slot masking missed
    call.caller("can I speak to a person", intent="speak_to_agent", confidence=0.95)
    _, handoff = escalate(call, last_intent="speak_to_agent")
    text = handoff.model_dump_json()
    assert list(validator.iter_errors(json.loads(text))) == []
    for message in handoff.last_3_messages:
        assert CARD not in re.sub(r"\D", "", message)
        assert "one one one one" not in message
    assert CARD not in re.sub(r"[\s-]", "", text)
    # ...while the rest of what the caller said survives for the agent
    assert handoff.last_3_messages[0] == "I want to pay my bill"
    assert "[card number removed]" in handoff.last_3_messages[1]


def test_phone_numbers_and_order_ids_are_not_masked():
    call = ScriptedCall("CAok", customer=james())
    call.caller("order A1001, call me on +1 415-555-0100 or +44 20 7946 0123", intent="track_order", confidence=0.9)
    call.caller("agent", intent="speak_to_agent", confidence=0.9)
    _, handoff = escalate(call, last_intent="speak_to_agent")
    assert handoff.last_3_messages[0] == "order A1001, call me on +1 415-555-0100 or +44 20 7946 0123"
