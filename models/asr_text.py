"""Text normalisation for comparing transcripts (WER): references spell numbers out, Whisper writes digits."""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "vs": "versus"}
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at "}


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 <= n < 10**12, hyphens replaced by spaces."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            rest = n % size
            return number_to_words(n // size) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """Years as spoken: 1455 -> fourteen fifty five, 1900 -> nineteen hundred, 2005 -> two thousand five."""
    if 2000 <= n <= 2009 or n % 1000 == 0:
        return number_to_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_to_words(high) + " hundred"
    if low < 10:
        return number_to_words(high) + " oh " + number_to_words(low)
    return number_to_words(high) + " " + number_to_words(low)


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _plural(words: str) -> str:
    head, _, last = words.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") else last + "s"
    return f"{head} {last}".strip()


def _spell(match: re.Match[str]) -> str:
    digits, suffix = match.group(1).replace(",", ""), match.group(2) or ""
    if "." in digits:
        whole, frac = digits.split(".", 1)
        return f" {number_to_words(int(whole))} point {' '.join(_ONES[int(d)] for d in frac)} "
    n = int(digits)
    if suffix in ("st", "nd", "rd", "th"):
        return f" {_ordinal(number_to_words(n))} "
    is_year = len(digits) == 4 and 1100 <= n <= 2099
    if suffix == "s":  # the 1960s, the 90s
        return f" {_plural(year_to_words(n) if is_year else number_to_words(n))} "
    if is_year:
        return f" {year_to_words(n)} "
    if len(digits) > 1 and digits.startswith("0"):  # codes and phone numbers are read digit by digit
        return " " + " ".join(_ONES[int(d)] for d in digits) + " "
    return f" {number_to_words(n)} "


def normalize_transcript(text: str) -> str:
    """Lower case, no punctuation, numbers as words: what WER should compare."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"\$(\d[\d,]*(?:\.\d+)?)", r"\1 dollars", text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"(\d(?:[\d,]*\d)?(?:\.\d+)?)(st|nd|rd|th|s)?\b", _spell, text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes inside words
    words = [_ABBREVIATIONS.get(w, w) for w in text.split()]
    return " ".join(words)
