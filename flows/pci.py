"""Card numbers (PCI): one detector, used wherever caller input crosses a boundary.

A card number is a run of 13 to 19 digits that passes the Luhn check. Callers and Whisper write them many ways:
"4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "4,111,111,111,111,111" or "four one one
one ...", so a run is digits and digit words separated by nothing, spaces, commas or hyphens. A longer run that
holds a Luhn-valid stretch of 13 to 19 digits (a menu key typed right before the card) counts as one too.
Digits inside a word (a call id such as "CA00f1...") never count.

Free text (transcripts, turn text, handoffs, exports, log lines) gets `CARD_MASK` in place of the whole run;
keys (`mask_keyed_digits`) keep their length and every other key, so a run of keys can be cut into entries
and each entry still masked.
"""

from __future__ import annotations

import re

CARD_MASK = "[card number removed]"
MIN_DIGITS, MAX_DIGITS = 13, 19

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z0-9]+")
_SEPARATOR = re.compile(r"[\s,\-]*")
_KEYED_RUN = re.compile(r"\d+")


def luhn_valid(digits: str) -> bool:
    """The check digit card numbers carry (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_digit_spans(digits: str) -> list[tuple[int, int]]:
    """The Luhn-valid stretches of 13 to 19 digits in `digits` (digits only), as (start, end), overlaps merged."""
    n = len(digits)
    if n < MIN_DIGITS:
        return []
    if n > 4 * MAX_DIGITS:
        return [(0, n)]  # almost surely holds one (each stretch passes by chance 1 in 10); and bounds the work
    spans: list[tuple[int, int]] = []
    for start in range(n - MIN_DIGITS + 1):
        for length in range(MIN_DIGITS, min(MAX_DIGITS, n - start) + 1):
            if luhn_valid(digits[start : start + length]):
                end = start + length
                if spans and start <= spans[-1][1]:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], end))
                else:
                    spans.append((start, end))
    return spans


def holds_card_number(digits: str) -> bool:
    """True if `digits` (digits only) is, or contains, a Luhn-valid stretch of 13 to 19 digits."""
    return bool(card_digit_spans(digits))


def card_number_spans(text: str) -> list[tuple[int, int]]:
    """Where card numbers are in `text`: (start, end) of each run of digits or digit words that holds one."""
    spans: list[tuple[int, int]] = []
    run: list[tuple[re.Match[str], str]] = []

    def close() -> None:
        if run and holds_card_number("".join(d for _, d in run)):
            spans.append((run[0][0].start(), run[-1][0].end()))
        run.clear()

    for m in _WORD.finditer(text):
        word = m.group()
        digits = word if word.isdigit() else _DIGIT_WORDS.get(word.lower())
        if digits is None:
            close()
            continue
        if run and not _SEPARATOR.fullmatch(text, run[-1][0].end(), m.start()):
            close()
        run.append((m, digits))
    close()
    return spans


def mask_card_numbers(text: str) -> str:
    """`text` with every card number replaced by `CARD_MASK`; everything else as it was."""
    for start, end in reversed(card_number_spans(text)):
        text = text[:start] + CARD_MASK + text[end:]
    return text


def mask_keyed_digits(keys: str) -> str:
    """Keys as typed ("1", "14111111111111111#"): each digit of a card number becomes "*", other keys stay
    ("1****************#"). The length is kept, so any stretch of the result is the masked form of the same
    stretch of the keys."""

    def mask(m: re.Match[str]) -> str:
        out = list(m.group())
        for start, end in card_digit_spans(m.group()):
            out[start:end] = "*" * (end - start)
        return "".join(out)

    return _KEYED_RUN.sub(mask, keys)
