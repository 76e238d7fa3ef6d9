"""A misbehaving CRM in the middle of a call: slow past its budget, or answering garbage.

The caller must hear a holding line within the budget (plus 100 ms), never silence and never a made-up answer;
the error is logged with the call id and counted; the call is not escalated behind the caller's back.
"""

from __future__ import annotations

import logging

import pytest

from telephony.simcaller import PressDigits, WaitForBot
from tests.calls_flows.conftest import (
    Caller,
    Do,
    HearFor,
    WaitForReply,
    backend_errors,
    caller_input_times,
    segments_after,
    transcribe_phone_audio,
)

pytestmark = pytest.mark.slow

MARIA = "+14155550100"  # an order in transit: key 1 looks its status up
BUDGET_S = 2.0  # longer than the "One moment while I look that up." line, so the holding line can be timed


async def test_slow_crm_gives_the_holding_line_within_budget_and_a_callback_not_an_escalation(
    start_with_budget, shared_models, caplog
):
    caplog.set_level(logging.DEBUG)
    server = await start_with_budget(BUDGET_S, flow="ecommerce_delivery")
    budget = server.settings.backends["crm"].timeout_s
    caller = Caller(server.ws_url, from_number=MARIA)
    result = await caller.run(
        [
            HearFor(0.8),  # she has been found by her number by now
            Do(lambda: server.crm_control(delay_ms=3000), "the CRM slows to 3 s"),
            PressDigits("1"),  # her delivery: an order-status lookup
            WaitForBot(timeout_s=20),  # holding line, then the callback question
            PressDigits("1"),  # yes, call me back
            WaitForBot(timeout_s=10),
        ]
    )
    result.print_timeline()
    record = await server.wait_call_closed(caller.call_sid)
    assert record["customer_id"] == "C1001"

    # What the caller heard: "One moment while I look that up." at once; when the budget ran out, the holding line.
    pressed = caller_input_times(result, "presses 1")[0]
    hold, holding_line = segments_after(result, pressed)[:2]
    assert hold.start_t - pressed < 0.3
    assert hold.end_t < holding_line.start_t, "the first line outlasted the budget: nothing to measure"
    waited = holding_line.start_t - pressed
    print(f"holding line started {waited * 1000:.0f} ms after the key press (budget {budget * 1000:.0f} ms)")
    assert budget - 0.05 <= waited <= budget + 0.1
    heard = await transcribe_phone_audio(shared_models, bytes(holding_line.audio))
    assert "longer than usual" in heard and "call you back" in heard, heard

    # The same from the server's log: lookup started -> timeout handled, on the event loop's clock.
    sid = caller.call_sid
    started = [r for r in caplog.records if "step transit_order_status (lookup)" in r.getMessage()]
    failed = [
        r
        for r in caplog.records
        if r.name == "ivr.backends" and r.levelno >= logging.ERROR and getattr(r, "call_sid", None) == sid
    ]
    assert len(started) == 1 and len(failed) == 1, [r.getMessage() for r in failed]
    assert "kind=timeout" in failed[0].getMessage() and sid in failed[0].getMessage()
    assert budget <= failed[0].created - started[0].created <= budget + 0.1

    assert (await backend_errors(server)).get(("crm", "order_status", "timeout")) == 1
    offered = [e for e in record["events"] if e["kind"] == "callback_offered"]
    assert len(offered) == 1 and "crm.order_status timed out" in offered[0]["data"]["reason"]
    lookup_turn, yes_turn = record["turns"]
    assert "taking longer than usual" in lookup_turn["reply"] and "on its way" not in lookup_turn["reply"]
    assert "call you back" in yes_turn["reply"]
    assert record["escalations"] == [] and not any(e["kind"] == "escalation" for e in record["events"])
    assert record["end_reason"] == "bot_hangup: callback requested"
    assert result.closed_by_server


async def test_garbage_from_the_crm_is_an_error_the_caller_hears_about_not_a_crash(start_server, caplog):
    caplog.set_level(logging.INFO)
    server = await start_server(flow="ecommerce_delivery")
    caller = Caller(server.ws_url, from_number=MARIA)
    result = await caller.run(
        [
            HearFor(0.8),
            Do(lambda: server.crm_control(garbage="html"), "the CRM answers with an HTML error page"),
            PressDigits("1"),
            WaitForReply(heard_s=6.0),  # "... can't reach that system right now. Would you like us to call you back"
            PressDigits("2"),  # no: a person, please
            WaitForReply(heard_s=1.0),
        ]
    )
    result.print_timeline()
    record = await server.wait_call_closed(caller.call_sid)

    lookup_turn, no_turn = record["turns"]
    assert "I can't reach that system right now" in lookup_turn["reply"]
    assert "call you back" in lookup_turn["reply"]
    assert "on its way" not in lookup_turn["reply"] and "delivered" not in lookup_turn["reply"]
    # Only when the caller turns the callback down does a person take over: not a blind escalation.
    assert no_turn["text"] == "2" and no_turn["reply"].startswith("Let me connect you with a colleague")
    (escalation,) = record["escalations"]
    assert escalation["trigger"] == "backend_failure"
    assert "crm.order_status failed (bad_response)" in escalation["reason"].lower()
    assert "declined a callback" in escalation["reason"]  # what the agent reads: the caller chose a person
    assert [e["kind"] for e in record["events"]].index("escalation") > [e["kind"] for e in record["events"]].index(
        "callback_offered"
    )

    assert (await backend_errors(server)).get(("crm", "order_status", "bad_response")) == 1
    logged = [r for r in caplog.records if r.name == "ivr.backends" and getattr(r, "call_sid", None) == caller.call_sid]
    assert any("kind=bad_response" in r.getMessage() for r in logged)
    # The session survived: no task failed, the caller hung up and the record is closed and complete.
    assert not [e for e in record["events"] if e["kind"] == "error"]
    assert record["end_reason"] == "caller_hung_up" and record["outcome"] == "escalated"
    assert not result.closed_by_server
