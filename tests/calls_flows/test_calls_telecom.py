"""The telecom billing line, a whole live call with the real models: "I can't pay my bill" (Piper's voice, heard
by Whisper) is billing trouble (a payment arrangement), never "pay my bill", offered only once the caller has
typed the last four digits of her account number; "top up" is understood by speech."""

from __future__ import annotations

import pytest

from telephony.simcaller import PlayAudio, PressDigits
from tests.calls_flows.conftest import Caller, HearFor, WaitForReply, crm_journal

pytestmark = pytest.mark.slow

MARIA = "+14155550100"


async def test_cant_pay_my_bill_offers_an_arrangement_and_top_up_is_understood(start_server, synth_phone):
    server = await start_server(flow="telecom_billing")
    caller = Caller(server.ws_url, from_number=MARIA)
    result = await caller.run(
        [
            HearFor(1.0),  # she knows what she wants and talks over the greeting
            PlayAudio(synth_phone("I can't pay my bill."), "can't pay"),
            WaitForReply(heard_s=1.0),
            PressDigits("3391#"),  # the last four digits of her account number (demo CRM)
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
    assert len(turns) == 4, turns
    cant_pay, verify, no, top_up = record["turns"]
    assert cant_pay["intent"] == "billing_problem" and cant_pay["confidence"] >= 0.85, turns
    assert "last four digits of your account number" in cant_pay["reply"]
    assert verify["text"] == "[keypad entry withheld: 4 digits]"
    assert "payment arrangement" in verify["reply"]
    assert "Would you like me to set that up?" in verify["reply"]
    assert "Your balance is" not in verify["reply"]  # the pay_bill path reads the balance out
    assert (no["channel"], no["text"]) == ("dtmf", "2") and "anything else" in no["reply"]

    assert "top up" in top_up["text"].lower()
    assert top_up["intent"] == "top_up" and top_up["confidence"] >= 0.85, turns
    assert top_up["reply"].startswith("How much would you like to top up?")

    # Nothing was paid, arranged or looked up beyond the caller's own record and the check of her digits.
    journal = await crm_journal(server)
    paths = [r["path"] for r in journal]
    assert len(paths) == 2 and paths[0].startswith("/customers/by-phone"), paths
    assert paths[1] == "/customers/C1001/verify" and "3391" not in str(journal)
    assert record["escalations"] == []
