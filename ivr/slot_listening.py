"""Slot-aware listening: what the step waits for decides how long a pause ends the caller's turn, and what
counts as an answer rather than a backchannel.

A caller reading an order number or card-free digits pauses between groups ("four five six ... seven eight
... nine"); the conversational 400-500 ms endpoint cuts that into pieces the step rejects one by one. A yes/no
question is the opposite case: "yeah", "sure", "okay", "right" over its prompt are the answer, not the caller
acknowledging that we are talking.
"""

from __future__ import annotations

import re

from flows.actions import Listen, SlotKind
from flows.engine import words_to_numbers
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


def join_spoken_digits(text: str, language: str = "en") -> str:
    """Number words as digits, and digit groups said with pauses joined: "four five six, seven eight" -> "45678".

    text2num reads English, German, Spanish, French, Italian, Portuguese and Dutch number words.
    """
    return _DIGIT_GROUPS.sub("", words_to_numbers(text, language))
