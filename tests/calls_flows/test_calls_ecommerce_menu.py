"""Shop line, whole calls: a known caller with an order on its way hears it offered, asks in regional wording
("where is me parcel?") and gets its status; a caller without one is never offered a delivery."""

from __future__ import annotations

import pytest

from telephony.simcaller import PlayAudio, PressDigits, WaitForBot
from tests.calls_flows.conftest import (
    Caller,
    HearFor,
    WaitForReply,
    caller_input_times,
    heard_between,
    transcribe_phone_audio,
)

pytestmark = pytest.mark.slow

MARIA = "+14155550100"  # VIP, espresso machine in transit
JAMES = "+14155550101"  # only delivered orders


async def test_maria_hears_her_delivery_offered_asks_for_me_parcel_and_ends_resolved(
    start_server, synth_phone, shared_models
):
    server = await start_server(flow="ecommerce_delivery")
    caller = Caller(server.ws_url, from_number=MARIA)
    result = await caller.run(
        [
            HearFor(13.5),  # greeting, her name, the question and the first option
            PlayAudio(synth_phone("Where is me parcel?"), "me parcel"),
            WaitForReply(heard_s=8.0),  # holding line and the status
            PlayAudio(synth_phone("No, that's all."), "that's all"),
            WaitForBot(timeout_s=15),  # goodbye; the bot hangs up
        ]
    )
    result.print_timeline()  # shown when a test fails
    record = await server.wait_call_closed(caller.call_sid)

    (asked,) = caller_input_times(result, "me parcel")
    menu_heard = await transcribe_phone_audio(shared_models, heard_between(result, 0.0, asked))
    # Whisper tiny hears Piper's "espresso" as "a special"; the words around it are reliable.
    assert "your delivery of" in menu_heard and "machine" in menu_heard, menu_heard

    first, second = [t for t in record["turns"] if t["channel"] == "voice"]
    assert "me parcel" in first["text"].lower()  # the record keeps the caller's own words ...
    assert "my package" in server.services.region.normalise(first["text"])  # ... the intent model read these
    assert first["intent"] == "track_order" and first["confidence"] >= 0.85
    assert "Your order of espresso machine is on its way and should arrive" in first["reply"]
    assert first["reply"].endswith("Say yes or press 1, or say no or press 2.")
    assert second["intent"] == "goodbye" and "Goodbye" in second["reply"]

    status_heard = await transcribe_phone_audio(
        shared_models, heard_between(result, asked, caller_input_times(result, "that's all")[0])
    )
    assert "machine is on its way" in status_heard, status_heard

    assert result.closed_by_server, "the bot should hang up after its goodbye"
    assert record["end_reason"].startswith("bot_hangup")
    assert record["outcome"] == "resolved"
    assert record["customer_id"] == "C1001"
    assert record["escalations"] == []


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
