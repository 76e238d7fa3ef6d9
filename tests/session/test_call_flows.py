"""The shipped flows as whole calls on virtual time, against the demo CRM behind the real HTTP gateway: what a
known or unknown caller hears, regional wording understood, and a misbehaving CRM (slower than its budget, or
answering garbage) met with a holding line and a callback offer, never silence or a made-up answer."""

from __future__ import annotations

import logging

import pytest

from tests.helpers.leaks import without_times
from tests.helpers.virtual_call import JAMES, MARIA

pytestmark = pytest.mark.looptime


async def test_maria_hears_her_delivery_offered_asks_for_me_parcel_and_ends_resolved(make_harness):
    h = await make_harness(flow="ecommerce_delivery")
    call = await h.call(MARIA).start()
    await call.wait_for_bot()
    assert "If you're calling about your delivery, of espresso machine, press 1." in call.heard_text()
    asked = await call.say("Where is me parcel?")
    await call.wait_for_bot()
    status = call.heard_text(since=asked.first_sent_at or 0.0)
    await call.say("No, that's all.")
    await call.wait_for(lambda: call.session.ended.is_set(), what="the bot to hang up")
    record = await call.finish()

    assert "Your order of espresso machine is on its way" in status
    first, second = [t for t in record["turns"] if t["channel"] == "voice"]
    assert first["text"] == "Where is me parcel?"  # the record keeps the caller's own words ...
    assert "my package" in h.services.region.normalise(first["text"])  # ... the intent model read these
    assert first["intent"] == "track_order" and first["confidence"] >= 0.85
    assert "Your order of espresso machine is on its way and should arrive" in first["reply"]
    assert first["reply"].endswith("Say yes or press 1, or say no or press 2.")
    assert second["intent"] == "goodbye" and "Goodbye" in second["reply"]
    assert call.heard_text().endswith("Thanks for calling Acme Shop. Goodbye.")  # the goodbye played out
    assert record["end_reason"].startswith("bot_hangup") and call.transport.closed is not None
    assert (record["outcome"], record["customer_id"], record["escalations"]) == ("resolved", "C1001", [])


async def test_james_without_an_order_in_transit_is_never_offered_a_delivery(make_harness):
    h = await make_harness(flow="ecommerce_delivery")
    call = await h.call(JAMES).start()
    await call.wait_for_bot()
    menu = call.heard_text()
    pressed = call.loop.time()
    await call.press("1")
    await call.wait_for_bot()
    record = await call.finish()

    assert "press 2" in menu and "delivery of" not in menu
    (turn,) = record["turns"]
    assert turn["channel"] == "dtmf" and turn["text"] == "1"
    # Key 1 is Maria's delivery option: for James it is no option at all, and the menu he is read again lacks it.
    assert turn["reply"].startswith("Sorry, I didn't get that.")
    assert "To track an order, press 2." in turn["reply"] and "delivery of" not in turn["reply"]
    assert call.heard_text(since=pressed).startswith("Sorry, I didn't get that.")
    assert record["customer_id"] == "C1002"


async def test_a_crm_slower_than_its_budget_gives_the_holding_line_at_the_budget_and_a_callback(make_harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = await make_harness(flow="ecommerce_delivery", budget_s=2.0)
    budget = h.settings.backends["crm"].timeout_s
    call = await h.call(MARIA).start()
    await call.wait(0.8)  # she has been found by her number by now
    h.crm.control(delay_ms=3000)
    await call.press("1", gap_s=0)  # her delivery: an order-status lookup
    pressed = call.loop.time()
    await call.wait_for(lambda: "call you back" in call.heard_text(), what="the callback offer")
    await call.wait_for_bot()
    await call.press("1")  # yes, call me back
    await call.wait_for(lambda: call.session.ended.is_set(), what="the bot to hang up")
    record = await call.finish()

    hold, holding_line = [s for s in call.speech() if s.start_t >= pressed][:2]
    assert hold.text == "One moment while I look that up." and hold.start_t - pressed <= 0.02
    assert hold.end_t < holding_line.start_t  # the first line ended before the budget ran out
    assert holding_line.start_t - pressed == pytest.approx(budget, abs=0.02)
    assert "longer than usual" in holding_line.text or "longer than usual" in call.heard_text(since=hold.end_t)

    sid = call.call_sid
    started = [r for r in caplog.records if "step transit_order_status (lookup)" in r.getMessage()]
    failed = [
        r
        for r in caplog.records
        if r.name == "ivr.backends" and r.levelno >= logging.ERROR and getattr(r, "call_sid", None) == sid
    ]
    assert len(started) == 1 and len(failed) == 1, [r.getMessage() for r in failed]
    assert "kind=timeout" in failed[0].getMessage() and sid in failed[0].getMessage()
    assert h.services.gateway.metrics.count("crm", "order_status", "timeout") == 1

    offered = [e for e in record["events"] if e["kind"] == "callback_offered"]
    assert len(offered) == 1 and "crm.order_status timed out" in offered[0]["data"]["reason"]
    lookup_turn, yes_turn = record["turns"]
    assert "taking longer than usual" in lookup_turn["reply"] and "on its way" not in lookup_turn["reply"]
    assert "call you back" in yes_turn["reply"]
    assert record["escalations"] == [] and not any(e["kind"] == "escalation" for e in record["events"])
    assert record["end_reason"] == "bot_hangup: callback requested"
    assert [s["to"] for s in h.twilio.sms] == [MARIA]
    assert call.transport.closed is not None


async def test_garbage_from_the_crm_is_an_error_the_caller_hears_about_not_a_crash(make_harness, caplog):
    caplog.set_level(logging.INFO)
    h = await make_harness(flow="ecommerce_delivery")
    call = await h.call(MARIA).start()
    await call.wait(0.8)
    h.crm.control(garbage="html")
    await call.press("1")
    await call.wait_for(lambda: "call you back" in call.heard_text(), what="the callback offer")
    await call.press("2")  # no: a person, please
    await call.wait_for_reply(heard_s=1.0)
    record = await call.finish()

    lookup_turn, no_turn = record["turns"]
    assert "I can't reach that system right now" in lookup_turn["reply"] and "call you back" in lookup_turn["reply"]
    assert "on its way" not in lookup_turn["reply"] and "delivered" not in lookup_turn["reply"]
    # Only when the caller turns the callback down does a person take over: not a blind escalation.
    assert no_turn["text"] == "2" and no_turn["reply"].startswith("Let me connect you with a colleague")
    (escalation,) = record["escalations"]
    assert escalation["trigger"] == "backend_failure"
    assert "crm.order_status failed (bad_response)" in escalation["reason"].lower()
    assert "declined a callback" in escalation["reason"]  # what the agent reads: the caller chose a person
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("escalation") > kinds.index("callback_offered")
    assert h.services.gateway.metrics.count("crm", "order_status", "bad_response") == 1
    logged = [r for r in caplog.records if r.name == "ivr.backends" and getattr(r, "call_sid", None) == call.call_sid]
    assert any("kind=bad_response" in r.getMessage() for r in logged)
    # The session survived: no task failed, the caller hung up and the record is closed and complete.
    assert not [e for e in record["events"] if e["kind"] == "error"]
    assert record["end_reason"] == "caller_hung_up" and record["outcome"] == "escalated"


async def test_cant_pay_my_bill_offers_an_arrangement_and_top_up_is_understood(make_harness):
    h = await make_harness(flow="telecom_billing")
    call = await h.call(MARIA).start()
    await call.wait(1.0)  # she knows what she wants and talks over the greeting
    await call.say("I can't pay my bill.")
    await call.wait_for_reply(heard_s=1.0)
    await call.wait_for_bot()
    await call.press("3391#")  # the last four digits of her account number: she is verified first
    await call.wait_for_bot()
    await call.press("2")  # "no" to setting up the arrangement now
    await call.wait_for_bot()
    await call.say("I want to top up my phone.")
    await call.wait_for_reply(heard_s=1.0)
    record = await call.finish()

    cant_pay, verify, no, top_up = record["turns"]
    assert cant_pay["intent"] == "billing_problem" and cant_pay["confidence"] >= 0.85
    assert "last four digits of your account number" in cant_pay["reply"]
    assert "payment arrangement" not in cant_pay["reply"]  # nothing offered before she is verified
    assert (verify["channel"], verify["text"]) == ("dtmf", "[keypad entry withheld: 4 digits]")
    assert "payment arrangement" in verify["reply"] and "Would you like me to set that up?" in verify["reply"]
    assert "Your balance is" not in verify["reply"]  # the pay_bill path reads the balance out
    assert (no["channel"], no["text"]) == ("dtmf", "2") and "anything else" in no["reply"]
    assert top_up["intent"] == "top_up" and top_up["confidence"] >= 0.85
    assert top_up["reply"].startswith("How much would you like to top up?")  # verified once is enough
    assert call.events(record, "verification") == [
        {"outcome": "verified", "method": "account_digits", "attempt": 1, "attempts_allowed": 3}
    ]
    # Nothing was paid, arranged or looked up beyond the caller's own record and the check of her digits,
    # which reached the CRM only in the body of that check.
    paths = [r["path"] for r in h.crm.journal]
    assert len(paths) == 2 and paths[0].startswith("/customers/by-phone"), paths
    assert paths[1] == "/customers/C1001/verify"
    assert "3391" not in str(list(h.crm.journal)) and "3391" not in without_times(str(record))
    assert record["escalations"] == []
