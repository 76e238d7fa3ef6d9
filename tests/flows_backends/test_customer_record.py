"""The one customer converter: what any backend's customer record becomes in the call's context."""

from __future__ import annotations

from typing import Any

import pytest

from flows.cli import load_flow
from flows.context import CallContext
from flows.engine import FlowEngine
from flows.identity import customer_from_result, match_key
from flows.testing import ScriptedGateway
from models.intent import IntentResult

MARIA = {
    "customer_id": "C1001",
    "name": "Maria Garcia",
    "email": "Maria.Garcia@example.com",
    "phone": "(415) 555-0100",
    "lifetime_value": 7240.5,
    "tier": "vip",
    "preferred_channel": "sms",
    "orders": [{"order_id": "A1001", "status": "in_transit"}],
    "tickets": [{"date": "2024-05-01", "type": "refund", "resolved": True}],
    "found": True,
}


def test_a_full_record_keeps_everything_and_gets_an_e164_phone_and_match_key() -> None:
    customer = customer_from_result(MARIA, phone="+14155550199")
    assert customer is not None
    assert customer.customer_id == "C1001" and customer.name == "Maria Garcia"
    assert customer.phone_e164 == "+14155550100"  # the record's number wins over the caller ID
    assert customer.match_key == match_key("+1 415-555-0100")
    assert customer.email == "Maria.Garcia@example.com"
    assert (customer.lifetime_value, customer.tier, customer.preferred_channel) == (7240.5, "vip", "sms")
    assert customer.orders == MARIA["orders"] and customer.tickets == MARIA["tickets"]


def test_a_sparse_record_is_completed_from_the_caller_id_and_defaults() -> None:
    record: dict[str, Any] = {"customer_id": 42, "lifetime_value": "n/a", "orders": [{"order_id": "B1"}, "junk"]}
    customer = customer_from_result(record, phone="(415) 555-0101")
    assert customer is not None
    assert customer.customer_id == "42" and customer.name == ""
    assert customer.phone_e164 == "+14155550101" and customer.match_key == match_key("+14155550101")
    assert (customer.lifetime_value, customer.tier, customer.preferred_channel) == (0.0, "standard", "voice")
    assert customer.orders == [{"order_id": "B1"}] and customer.tickets == []


def test_an_unusable_phone_is_dropped_and_the_email_gives_the_match_key() -> None:
    record = {"customer_id": "C9", "phone_e164": "not a number", "email": "a@example.com"}
    customer = customer_from_result(record, phone="anonymous")
    assert customer is not None
    assert customer.phone_e164 is None
    assert customer.match_key == match_key("a@example.com")


def test_not_found_is_none_and_a_record_without_id_is_refused() -> None:
    assert customer_from_result({"found": False}) is None
    with pytest.raises(ValueError, match="customer_id"):
        customer_from_result({"name": "Nobody"})


class _NoNlu:
    def classify(self, text: str) -> IntentResult:
        raise AssertionError("the greeting needs no NLU")

    def yes_no(self, text: str) -> bool | None:
        raise AssertionError("the greeting needs no NLU")


async def test_the_flow_engine_uses_the_same_converter() -> None:
    flow = load_flow("ecommerce_delivery")
    gateway = ScriptedGateway({"crm.customer_by_phone": {"ok": {"customer_id": "C1", "name": "Maria Garcia"}}})
    engine = FlowEngine(flow, _NoNlu(), gateway, answer_threshold=flow.answer_threshold)
    ctx = CallContext(call_sid="CA-conv", caller="+1 (415) 555-0100")
    _ = [action async for action in engine.start(ctx)]
    assert ctx.customer is not None
    assert ctx.customer.phone_e164 == "+14155550100"  # normalised, not the raw caller ID
    assert ctx.customer.match_key == match_key("+14155550100")
