"""The one card-number detector (`flows.pci`): what it masks in text, in keys and in log lines, and what it
leaves alone (phone numbers, order numbers, call ids, timestamps)."""

from __future__ import annotations

import io
import logging

import pytest

from flows.pci import CARD_MASK, luhn_valid, mask_card_numbers, mask_keyed_digits
from ivr.access_log import PrivateDataFilter

CARD = "4556012345677004"


def test_the_luhn_check():
    assert luhn_valid(CARD) and luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4556012345677007")


@pytest.mark.parametrize(
    "said",
    [f"my card number is {CARD}", "it's 4556 0123 4567 7004", "4556-0123-4567-7004 expiry 12 27",
     "my card is 4,556,012,345,677,004", "4,111,111,111,111,111,111",
     "four five five six zero one two three four five six seven seven zero zero four",
     "four one one one 1111 1111 1111"],
)  # fmt: skip
def test_card_numbers_are_masked_however_they_are_written(said):
    masked = mask_card_numbers(said)
    assert CARD_MASK in masked
    assert not any(len(run) >= 4 for run in masked.replace(CARD_MASK, "").split() if run.isdigit())


@pytest.mark.parametrize(
    "text",
    ["order A1001, call me on +1 415-555-0100 or +44 20 7946 0123", "order 2001 and 2002",
     "call CA00000000000000000000000000000001 started", "2026-11-28 09:28:51,123 INFO ivr started",
     "card ending 7004", "tracking 1234567890123"],
)  # fmt: skip
def test_other_numbers_are_left_alone(text):
    assert mask_card_numbers(text) == text


def test_keys_keep_their_length_and_only_the_card_is_masked():
    assert mask_keyed_digits("1" + CARD + "#") == "1" + "*" * len(CARD) + "#"
    assert mask_keyed_digits("20010#") == "20010#"
    assert mask_keyed_digits("*" * 5 + "1") == "*" * 5 + "1"


def test_the_log_filter_masks_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivateDataFilter())
    logger = logging.getLogger("tests.pci")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("heard %r from %s", f"my card is {CARD}", "+14155550100")
        logger.warning(f"keys {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}")
        try:
            raise ValueError(f"bad input {CARD}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out = stream.getvalue()
    assert CARD not in out.replace(" ", "") and CARD[:12] not in out.replace(" ", "")
    assert out.count(CARD_MASK) == 3 and "+14155550100" in out and "ValueError" in out
