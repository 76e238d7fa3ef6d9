"""The shop line, a whole live call with the real models: a known caller without an order on its way is never
offered a delivery (what he heard, checked by Whisper as the listener). Regional wording, the delivery offer and a
misbehaving CRM: tests/session/test_flow_calls.py."""

from __future__ import annotations

import pytest

from telephony.simcaller import PressDigits
from tests.calls_flows.conftest import (
    Caller,
    HearFor,
    WaitForReply,
    caller_input_times,
    heard_between,
    transcribe_phone_audio,
)

pytestmark = pytest.mark.slow

JAMES = "+14155550101"  # only delivered orders


async def test_james_without_an_order_in_transit_is_never_offered_a_delivery(start_server, shared_models):
    server = await start_server(flow="ecommerce_delivery")
    caller = Caller(server.ws_url, from_number=JAMES)
    result = await caller.run([HearFor(11.5), PressDigits("1"), WaitForReply(heard_s=1.0)])
    result.print_timeline()  # shown when a test fails
    record = await server.wait_call_closed(caller.call_sid)

    (pressed,) = caller_input_times(result, "presses 1")
    heard = await transcribe_phone_audio(shared_models, heard_between(result, 0.0, pressed))
    assert "press" in heard, heard  # he did hear a menu (Whisper tiny is the listener: checked loosely) ...
    assert "delivery of" not in heard and "machine" not in heard, heard  # ... without a delivery in it

    (turn,) = record["turns"]
    assert turn["channel"] == "dtmf" and turn["text"] == "1"
    # Key 1 is Maria's delivery option: for James it is no option at all, and the menu he is read again lacks it.
    assert turn["reply"].startswith("Sorry, I didn't get that.")
    assert "To track an order, press 2." in turn["reply"]
    assert "delivery of" not in turn["reply"]
    # Audio after the key press (it may run straight on from the menu's last frames, so count frames, not gaps).
    assert sum(t > pressed + 0.1 for t in result.frame_arrivals) > 25, "the bot did not answer the key press"
    assert record["customer_id"] == "C1002"
