"""Keypad collection on virtual time: a key in a menu is an answer at once; digit strings end with the finish
key, at the maximum length, or after the pause between keys; card numbers typed during a PCI slot are masked
everywhere and only their last four digits reach the bank."""

from __future__ import annotations

import json
import logging
import re

import pytest

from ivr.listening import ListeningOptions
from tests.helpers.virtual_call import JAMES, PRIYA, UNKNOWN

pytestmark = pytest.mark.looptime

INTER_DIGIT_S = ListeningOptions().inter_digit_s
ASK_ORDER = "Please say your order number, or type the digits on your keypad followed by the hash key."


async def test_a_single_key_in_a_menu_is_answered_at_once(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait_for_bot()
    await call.press("4", gap_s=0)
    pressed_at = call.loop.time()
    reply_at = await call.wait_for_bot()
    record = await call.finish()

    assert reply_at == pressed_at  # a cached prompt, as soon as the key arrives
    assert call.heard_text(since=reply_at).startswith("You can return most items within 30 days")
    (turn,) = record["turns"]
    assert (turn["channel"], turn["text"]) == ("dtmf", "4")
    assert [e["keys"] for e in call.events(record, "dtmf")] == ["4"]


async def _to_order_number(h, caller: str = JAMES):
    call = await h.call(caller).start()
    await call.wait_for_bot()
    await call.press("2")
    await call.wait_for_bot()
    assert call.heard_text().endswith(ASK_ORDER)
    return call


async def test_digits_collected_until_the_finish_key_make_one_entry(make_harness):
    h = await make_harness()
    call = await _to_order_number(h)
    await call.press("20010#", gap_s=0.3)
    await call.wait_for_bot()
    record = await call.finish()

    entry = record["turns"][1]
    assert (entry["channel"], entry["text"]) == ("dtmf", "20010")
    assert entry["reply"].startswith("I heard 2 0 0 1 0, is that right?")
    assert len(record["turns"]) == 2  # one entry, not one turn per key


async def test_reaching_the_maximum_length_ends_the_entry_without_waiting(make_harness):
    h = await make_harness()
    call = await _to_order_number(h)  # order numbers: at most 10 digits
    await call.press("1234567890", gap_s=0.1)
    last_key = call.loop.time() - 0.1
    reply_at = await call.wait_for_bot()
    record = await call.finish()

    assert record["turns"][1]["text"] == "1234567890"
    assert reply_at - last_key == pytest.approx(h.tts.render_delay_s, abs=1e-6)  # rendered, no inter-digit wait


async def test_a_pause_between_keys_flushes_a_partial_entry(make_harness):
    h = await make_harness()
    call = await _to_order_number(h)
    await call.press("2001", gap_s=0.5)
    last_key = call.loop.time() - 0.5
    reply_at = await call.wait_for_bot()
    record = await call.finish()

    assert record["turns"][1]["text"] == "2001"
    assert reply_at - last_key == pytest.approx(INTER_DIGIT_S + h.tts.render_delay_s, abs=1e-6)
    # A pause shorter than the inter-digit time keeps the entry open.
    assert 0.5 < INTER_DIGIT_S


CARD = "4556012345677007"  # Priya's card


def _leaks(text: str) -> list[str]:
    """The full number or its first 12 digits, also with spaces, dashes or quotes between the digits."""
    hits = []
    for digits in (CARD, CARD[:12]):
        pattern = r"\D{0,3}".join(digits)
        hits += [text[max(0, m.start() - 40) : m.end() + 40] for m in re.finditer(pattern, text)]
    return hits


async def test_a_card_typed_during_a_pci_slot_is_masked_everywhere_and_only_its_last_four_reach_the_bank(
    make_harness, caplog
):
    caplog.set_level(logging.DEBUG)
    h = await make_harness(flow="banking")
    assert h.services.answer_threshold == 0.92  # finance
    call = await h.call(PRIYA).start()
    await call.wait(1.0)
    await call.press("1")  # lost or stolen card
    await call.wait_for(lambda: "telephone banking PIN" in call.heard_text(), what="the PIN prompt")
    await call.press("7315#")  # her PIN (demo CRM): verified before anything is blocked
    await call.wait_for_reply(heard_s=1.0)
    await call.wait_for(lambda: "type the full card number" in call.heard_text(), what="the card prompt")
    asr_before = len(h.asr.calls)
    await call.say("four five five six", seconds=1.0)  # said out loud despite the prompt: not transcribed
    await call.press(CARD + "#", gap_s=0.1)
    await call.wait_for_reply(heard_s=0.5)
    await call.press("1")  # the count is right
    await call.wait_for(lambda: "That card is now blocked" in call.heard_text(), what="the block")
    await call.press("2")  # nothing else
    await call.wait_for(lambda: call.session.ended.is_set(), what="the bot to hang up")
    record = await call.finish()

    menu, pin, card, confirm, done = record["turns"]
    assert menu["text"] == "1" and "telephone banking PIN" in menu["reply"]
    assert pin["text"] == "[keypad entry withheld: 4 digits]" and "Please don't say it out loud." in pin["reply"]
    assert card["text"] == "[keypad entry withheld: 16 digits]" and card["reply"].startswith("I got 16 digits.")
    assert "That card is now blocked" in confirm["reply"]
    assert "Goodbye" in done["reply"]
    assert record["outcome"] == "resolved" and record["escalations"] == []
    assert record["end_reason"].startswith("bot_hangup")
    # Keys are recorded once per run of keys, not one row per key; every key typed in the card slot is a "*".
    assert "".join(e["keys"] for e in call.events(record, "dtmf")) == "1" + "*" * 5 + "*" * 18 + "2"
    assert len(h.asr.calls) == asr_before and call.events(record, "speech_ignored_pci")

    blocks = [r for r in h.crm.journal if r["path"].endswith("/cards/block")]
    assert [(b["path"], json.loads(b["body"])) for b in blocks] == [
        ("/customers/C1005/cards/block", {"card_last4": "7007"})
    ]
    assert h.crm.state.customers["C1005"]["blocked_cards"] == ["7007"]

    places = {
        "logs": "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records),
        "records": json.dumps(record),
        "database file": b"".join(p.read_bytes() for p in h.settings.data_dir.rglob("*") if p.is_file()).decode(
            "latin-1"
        ),
        "escalation queue": json.dumps(await h.services.db.list_escalations()),
        "/metrics": h.services.metrics.render().decode(),
        "CRM requests": json.dumps(h.crm.journal),
        "Twilio requests": json.dumps([h.twilio.sms, h.twilio.transfers]),
        "sent to the caller": json.dumps([s.raw for s in call.transport.sent if "media" not in str(s.raw)[:20]]),
    }
    assert call.call_sid in places["logs"]  # the logs did capture this call at DEBUG
    assert {where: hits for where, text in places.items() if (hits := _leaks(text))} == {}
    # The PIN, as a number of its own: a timestamp's microseconds ("...:31.873152") may hold the same four digits.
    pin_anywhere = re.compile(r"(?<!\d)7315(?!\d)")
    assert [where for where in ("logs", "records", "CRM requests") if pin_anywhere.search(places[where])] == []
