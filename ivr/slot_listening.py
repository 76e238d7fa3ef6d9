"""Slot-aware listening: what the step waits for decides how long a pause ends the caller's turn, and what
counts as an answer rather than a backchannel.

A caller reading an order number or card-free digits pauses between groups ("four five six ... seven eight
... nine"); the conversational 400-500 ms endpoint cuts that into pieces the step rejects one by one. A yes/no
question is the opposite case: "yeah", "sure", "okay", "right" over its prompt are the answer, not the caller
acknowledging that we are talking.

The step also says when an answer is whole, so the caller need not wait out a pause meant for someone still
reading (`answer_is_whole`): an id said to its last possible digit, a yes or a no at a yes/no question, a menu's
key said on its own ("two", "option two"). This is what VoiceXML calls a complete match; the turn-end policy
(`ivr/turn_end.py`) then ends the turn at once.
"""

from __future__ import annotations

import re

from flows.actions import Listen, SlotKind, ValueShape
from flows.engine import spoken_alnum, spoken_digits, spoken_key, words_to_numbers
from models.intent import parse_yes_no

SLOT_SILENCE_MS: dict[SlotKind, int] = {
    "digits": 1500,
    "order_number": 1500,
    "email": 1500,
    "date": 1000,
}
"""Silence that ends an utterance at a step expecting this kind of value; other steps keep the configured one."""

_DIGIT_GROUPS = re.compile(r"(?<=\d)[\s,.-]+(?=\d)")


def silence_ms_for(listen: Listen) -> int | None:
    """The endpointing silence for this turn, or None for the configured default."""
    return SLOT_SILENCE_MS.get(listen.expects) if listen.expects is not None else None


def answers_yes_no(listen: Listen, text: str) -> bool:
    """At a yes/no step, a short "yeah"/"sure"/"okay"/"right" is the answer, never a backchannel."""
    return listen.expects == "yes_no" and parse_yes_no(text) is not None


def answer_is_whole(listen: Listen, text: str) -> bool:
    """`text` (what the caller has said so far) answers the step in full: nothing the caller could add would
    still be a valid answer. A valid order number that a further digit would keep valid ("A1001" where 4 to 10
    digits are allowed) is not whole: the caller may be between digit groups."""
    if answers_yes_no(listen, text) or (listen.keys and spoken_key(text) in listen.keys):
        return True
    return listen.shape is not None and _fills(listen.shape, text)


def _fills(shape: ValueShape, text: str) -> bool:
    value = spoken_digits(text) if shape.value == "digits" else spoken_alnum(text)
    if not value:
        return False
    if shape.max_digits is not None and len(value) > shape.max_digits:
        return False
    if shape.pattern is not None and re.fullmatch(shape.pattern, value) is None:
        return False
    if shape.max_digits is not None and len(value) == shape.max_digits:
        return True
    # Valid now; whole only if one more digit (the way a spoken id goes on) would no longer be.
    return shape.pattern is not None and re.fullmatch(shape.pattern, value + "0") is None


def join_spoken_digits(text: str, language: str = "en") -> str:
    """Number words as digits, and digit groups said with pauses joined: "four five six, seven eight" -> "45678".

    text2num reads English, German, Spanish, French, Italian, Portuguese and Dutch number words.
    """
    return _DIGIT_GROUPS.sub("", words_to_numbers(text, language))
