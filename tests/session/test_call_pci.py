"""PCI by construction, on virtual time: a card number typed or said outside the card slot (right behind a menu
key, at a menu, on hold, out loud at any point) is masked by what it is, not by which prompt is playing. An
auditor searching the data directory's bytes, the call's records (keys joined across rows, turns joined), the
escalation queue, the log records and /metrics finds it nowhere in clear; the caller is still served."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest

from flows.pci import CARD_MASK, luhn_valid
from ivr.prompts import HOLD_LINE
from tests.helpers.virtual_call import JAMES, UNKNOWN, Harness, VirtualCall

pytestmark = pytest.mark.looptime

CARD = "4556012345677004"  # a Visa-style number with a valid check digit
SPOKEN = {
    "with commas, as Whisper writes a big number": "4,556,012,345,677,004",
    "in groups of four": "4556 0123 4567 7004",
    "with hyphens": "4556-0123-4567-7004",
    "as words": "four five five six zero one two three four five six seven seven zero zero four",
}
assert luhn_valid(CARD)


def _leaks(text: str) -> list[str]:
    """The full number or its first 12 digits, also with up to 3 other characters between the digits."""
    hits = []
    for digits in (CARD, CARD[:12]):
        pattern = r"\D{0,3}".join(digits)
        hits += [text[max(0, m.start() - 40) : m.end() + 40] for m in re.finditer(pattern, text)]
    return hits


async def assert_card_nowhere_in_clear(
    h: Harness, call: VirtualCall, record: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    keys = [e["keys"] for e in call.events(record, "dtmf")]
    places = {
        "logs": "\n".join(f"{r.getMessage()} {_what_a_record_carries(r)!r}" for r in caplog.records),
        "records": json.dumps(record, default=str),
        "data directory (every file's bytes)": b"".join(
            p.read_bytes() for p in h.settings.data_dir.rglob("*") if p.is_file()
        ).decode("latin-1"),
        "escalation queue": json.dumps(await h.services.db.list_escalations(), default=str),
        "/metrics": h.services.metrics.render().decode(),
        # Digits kept one per row would each look harmless: join them as an auditor would.
        "keys, every row joined": "".join(keys),
        "turns, every row joined": "".join(t["text"] or "" for t in record["turns"]),
    }
    assert call.call_sid in places["logs"]  # the logs did capture this call
    assert {where: hits for where, text in places.items() if (hits := _leaks(text))} == {}


# A log record's own bookkeeping: thread ids (15 digits, one in ten passes Luhn), times, line numbers.
_RECORD_BOOKKEEPING = {"created", "msecs", "relativeCreated", "thread", "process", "lineno", "levelno"}


def _what_a_record_carries(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_BOOKKEEPING}


def escalations_of(h: Harness, call: VirtualCall) -> list[dict[str, Any]]:
    return [e for e in h.services.db.sync.list_escalations() if e["call_sid"] == call.call_sid]


async def test_a_card_keyed_at_a_menu_is_one_masked_entry_not_a_digit_per_row(make_harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait_for_bot()
    await call.press(CARD, gap_s=0.2)
    await call.wait(8.0)  # the run of keys ends after the pause between keys
    record = await call.finish()

    # One record for the whole run of keys, the card's digits masked; not one row per key.
    assert [e["keys"] for e in call.events(record, "dtmf")] == ["*" * len(CARD)]
    # The first keys were answered at once, as menu keys are; the rest reached the flow as one masked entry.
    texts = [t["text"] for t in record["turns"] if t["channel"] == "dtmf"]
    assert texts == [CARD[0], CARD[1], CARD[2], "*" * (len(CARD) - 3)], texts
    await assert_card_nowhere_in_clear(h, call, record, caplog)


async def test_a_card_typed_right_behind_the_menu_key_is_masked(make_harness, caplog):
    """Type-ahead: the caller presses 1 (lost card) and goes straight on with the card number, while the menu
    prompt is still playing and before any card prompt was asked."""
    caplog.set_level(logging.DEBUG)
    h = await make_harness(flow="banking")
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    await call.press("1" + CARD + "#", gap_s=0.1)
    await call.wait(8.0)
    record = await call.finish()

    (keys,) = [e["keys"] for e in call.events(record, "dtmf")]
    assert keys == "1" + "*" * len(CARD) + "#"
    assert record["turns"][0]["text"] == "1"  # the menu key still worked: no account, so a person
    assert record["outcome"] == "escalated"
    await assert_card_nowhere_in_clear(h, call, record, caplog)


async def test_a_card_keyed_or_said_on_hold_is_masked(make_harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = await make_harness(flow="banking")
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    await call.press("0")  # a person, please
    await call.wait_for(
        lambda: bool(escalations_of(h, call)) and HOLD_LINE in call.heard_text(), what="escalation and hold line"
    )
    await call.wait(6.0)  # the key that asked for a person is a run of its own
    await call.press(CARD, gap_s=0.3)
    await call.wait(6.0)
    await call.say(f"my card is {SPOKEN['with commas, as Whisper writes a big number']}", seconds=2.0)
    await call.wait(3.0)
    record = await call.finish()

    assert [e["keys"] for e in call.events(record, "dtmf")] == ["0", "*" * len(CARD)]
    assert record["outcome"] == "escalated"
    await assert_card_nowhere_in_clear(h, call, record, caplog)


@pytest.mark.parametrize("said", list(SPOKEN.values()), ids=list(SPOKEN))
async def test_a_card_said_out_loud_at_a_menu_is_masked_before_the_nlu_the_turn_and_the_agent(
    make_harness, caplog, said
):
    caplog.set_level(logging.DEBUG)
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait_for_bot()
    await call.say(f"my card number is {said}", seconds=2.0)
    await call.wait_for_reply(heard_s=0.5)
    await call.say("I want to speak to a real person.")
    await call.wait_for(lambda: bool(escalations_of(h, call)), what="the escalation")
    await call.wait(2.0)
    record = await call.finish()

    assert record["turns"][0]["text"] == f"my card number is {CARD_MASK}"
    (escalation,) = escalations_of(h, call)
    assert f"my card number is {CARD_MASK}" in json.dumps(escalation, default=str)  # what the agent reads
    await assert_card_nowhere_in_clear(h, call, record, caplog)
