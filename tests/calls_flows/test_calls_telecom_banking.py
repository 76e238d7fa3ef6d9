"""Telecom billing and banking lines, whole calls: "I can't pay my bill" is billing trouble (a payment
arrangement), never "pay my bill"; "top up" is understood by speech; a lost card is blocked by keypad."""

from __future__ import annotations

import pytest

from ivr.demo_crm import demo_crm_state
from telephony.simcaller import PlayAudio, PressDigits, WaitForBot
from tests.calls_flows.conftest import Caller, HearFor, WaitForReply, crm_journal

pytestmark = pytest.mark.slow

MARIA = "+14155550100"
PRIYA = "+13125550103"  # VIP, card ending 7007


async def test_cant_pay_my_bill_offers_an_arrangement_and_top_up_is_understood(start_server, synth_phone):
    server = await start_server(flow="telecom_billing")
    caller = Caller(server.ws_url, from_number=MARIA)
    result = await caller.run(
        [
            HearFor(1.0),  # she knows what she wants and talks over the greeting
            PlayAudio(synth_phone("I can't pay my bill."), "can't pay"),
            WaitForReply(heard_s=1.0),
            PressDigits("2"),  # "no" to setting up the arrangement now
            WaitForReply(heard_s=1.0),  # "anything else?"
            PlayAudio(synth_phone("I want to top up my phone."), "top up"),
            WaitForReply(heard_s=1.0),
        ]
    )
    result.print_timeline()
    record = await server.wait_call_closed(caller.call_sid)

    turns = [(t["text"], t["intent"], t["confidence"], t["reply"][:60]) for t in record["turns"]]
    assert len(turns) == 3, turns
    cant_pay, no, top_up = record["turns"]
    assert cant_pay["intent"] == "billing_problem" and cant_pay["confidence"] >= 0.85, turns
    assert "payment arrangement" in cant_pay["reply"]
    assert "Would you like me to set that up?" in cant_pay["reply"]
    assert "Your balance is" not in cant_pay["reply"]  # the pay_bill path reads the balance out
    assert (no["channel"], no["text"]) == ("dtmf", "2") and "anything else" in no["reply"]

    assert "top up" in top_up["text"].lower()
    assert top_up["intent"] == "top_up" and top_up["confidence"] >= 0.85, turns
    assert top_up["reply"].startswith("How much would you like to top up?")

    # Nothing was paid, arranged or looked up beyond the caller's own record.
    paths = [r["path"] for r in await crm_journal(server)]
    assert len(paths) == 1 and paths[0].startswith("/customers/by-phone"), paths
    assert record["escalations"] == []


async def test_lost_card_is_blocked_by_keypad_and_the_call_ends_resolved(start_server):
    server = await start_server(flow="banking")
    assert server.services.answer_threshold == 0.92  # finance
    caller = Caller(server.ws_url, from_number=PRIYA)
    result = await caller.run(
        [
            HearFor(1.0),
            PressDigits("1"),  # lost or stolen card
            WaitForReply(heard_s=1.0),
            PressDigits("4556012345677007#", gap_s=0.1),
            WaitForReply(heard_s=0.5),  # "I got 16 digits. If that's right, press 1."
            PressDigits("1"),
            WaitForReply(heard_s=4.5),  # "one moment ..." then "that card is now blocked"
            PressDigits("2"),  # nothing else
            WaitForBot(timeout_s=10),
        ]
    )
    result.print_timeline()
    record = await server.wait_call_closed(caller.call_sid)

    menu, card, confirm, done = record["turns"]
    assert menu["text"] == "1" and "type the full card number" in menu["reply"]
    assert card["text"] == "[keypad entry withheld: 16 digits]"
    assert card["reply"].startswith("I got 16 digits.")
    assert "That card is now blocked" in confirm["reply"]
    assert "Goodbye" in done["reply"]

    blocks = [r for r in await crm_journal(server) if r["path"].endswith("/cards/block")]
    assert [(b["path"], b["body"].replace(" ", "")) for b in blocks] == [
        ("/customers/C1005/cards/block", '{"card_last4":"7007"}')
    ]
    assert demo_crm_state(server.crm_runner).customers["C1005"]["blocked_cards"] == ["7007"]
    assert result.closed_by_server
    assert record["outcome"] == "resolved"
    assert record["escalations"] == []
