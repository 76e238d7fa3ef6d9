"""Plain-text normalisation for Piper (no SSML) and sentence splitting for streamed synthesis.

espeak-ng (Piper's phonemiser) already reads plain integers, decimals, "1,234", ordinals ("24th") and
capital letters well, so the rules below only rewrite what it reads badly or ambiguously. Numbers are left as
digits on purpose: espeak expands them, and the output stays short and easy to test.

Rules, applied in this order (each pass leaves text the later passes do not match again, so
``normalize_for_speech`` is idempotent):

1. Email addresses: ``help@shop.com`` -> ``help at shop dot com``.
2. Phone numbers, read in digit groups with a pause (comma) between groups:
   ``+1 415 555 0100`` -> ``plus 1, 4 1 5, 5 5 5, 0 1 0 0``; also ``(415) 555-0100``, ``415.555.0100``,
   ``1-800-555-0100``, a bare 10-digit run, and E.164 without separators (``+14155550100``, grouped with
   ``phonenumbers``).
3. Dates: ISO ``2026-11-24`` and US ``11/24/2026`` (month first; 2-digit years are 20xx) ->
   ``November 24th, 2026``. Impossible dates (``2026-02-30``) are left alone.
4. Times: ``3:30 pm`` / ``3:30 p.m.`` / ``3:30PM`` -> ``3 30 PM``; ``3:00 pm`` -> ``3 PM``; ``3:05 pm`` ->
   ``3 oh 5 PM``; ``3pm`` -> ``3 PM``. Without AM/PM, ``15:30`` -> ``3 30 PM`` and a leading zero marks a 24-hour
   clock (``09:05`` -> ``9 oh 5 AM``); ``3:30`` stays ``3 30`` (we don't guess the half of the day).
5. Money: ``$12.50`` -> ``12 dollars and 50 cents``; ``$1`` -> ``1 dollar``; ``$0.99`` -> ``99 cents``;
   ``$1,200`` -> ``1,200 dollars``; ``$2.5 million`` -> ``2.5 million dollars``; ``-$5`` -> ``minus 5 dollars``;
   the same for ``£`` (pounds/pence) and ``€`` (euros/cents).
6. Identifiers, read character by character, letters and digit groups separated by a pause:
   - ``#10234`` -> ``number 1 0 2 3 4``;
   - a token mixing letters and at least 3 digits: ``A-10234`` -> ``A, 1 0 2 3 4``, ``1Z999AA1`` ->
     ``1, Z, 9 9 9, A A, 1`` (but a quantity with a unit, ``500GB``/``100mg``, and ordinals stay as they are);
   - a number of 3+ digits right after an id word (order, confirmation, reference, account, ticket, case,
     tracking, invoice, booking, reservation, member, policy, claim, id, pin, code, zip, number, no.,
     "ending in"): ``order 10234`` -> ``order 1 0 2 3 4``, ``ending in 4321`` -> ``ending in 4 3 2 1``.
   Plain quantities (``3 items``, ``250 points``, ``in 2026``) stay numbers.
7. Symbols: ``%`` -> ``percent``, ``&`` -> ``and``; whitespace collapsed.
"""

from __future__ import annotations

import calendar
import re
import unicodedata

import phonenumbers

__all__ = ["normalize_for_speech", "split_first_clause", "split_sentences"]

MAX_SENTENCE_CHARS = 160
"""Longer sentences are cut at a comma/semicolon so the first audio of a long sentence is not delayed."""

_MONTHS = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# --- helpers -----------------------------------------------------------------------------------------------


def _digits(s: str) -> str:
    return " ".join(s)


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _spell_id(token: str) -> str:
    """ "A-10234" -> "A, 1 0 2 3 4": letter runs spelled as capitals, digit runs digit by digit."""
    groups = re.findall(r"[A-Za-z]+|\d+", token)
    return ", ".join(_digits(g.upper()) for g in groups)


# --- 1. email ------------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")


def _email(m: re.Match[str]) -> str:
    user = m.group(1).replace(".", " dot ")
    return f"{user} at {m.group(2).replace('.', ' dot ')}"


# --- 2. phone numbers ----------------------------------------------------------------------------------------

# International: "+" then groups separated by single spaces, dots or dashes, 8-15 digits in all (checked below).
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}(?![\w])")
# North American: optional leading 1, area code (parentheses allowed), 3 + 4 digits.
_PHONE_NANP = re.compile(
    r"(?<![\w+#-])(?:1[ .-])?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])"
    r"|(?<![\w+#$£€.,-])1?\d{10}(?![\w.,]\d|[\w-])"
)


def _read_groups(groups: list[str], plus: bool) -> str:
    spoken = ", ".join(_digits(g) for g in groups if g)
    return f"plus {spoken}" if plus else spoken


def _phone_intl(m: re.Match[str]) -> str:
    raw = m.group(0)
    digits = re.sub(r"\D", "", raw)
    if not 8 <= len(digits) <= 15:
        return raw
    groups = re.findall(r"\d+", raw)
    if len(groups) == 1:  # E.164 without separators: let libphonenumber find the national grouping
        try:
            formatted = phonenumbers.format_number(
                phonenumbers.parse(raw, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL
            )
            groups = re.findall(r"\d+", formatted)
        except phonenumbers.NumberParseException:
            groups = [digits[:-7], digits[-7:-4], digits[-4:]]
    return _read_groups(groups, plus=True)


def _phone_nanp(m: re.Match[str]) -> str:
    raw = m.group(0)
    groups = re.findall(r"\d+", raw)
    if len(groups) == 1:  # bare run: [1] 3-3-4
        d = groups[0]
        groups = ([d[0]] if len(d) == 11 else []) + [d[-10:-7], d[-7:-4], d[-4:]]
    return _read_groups(groups, plus=False)


# --- 3. dates ------------------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"(?<![\w-])(\d{4})-(\d{2})-(\d{2})(?![\w-])")
_US_DATE = re.compile(r"(?<![\w/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})(?![\w/])")


def _say_date(year: int, month: int, day: int) -> str | None:
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return f"{_MONTHS[month]} {_ordinal(day)}, {year}"


def _iso_date(m: re.Match[str]) -> str:
    return _say_date(int(m.group(1)), int(m.group(2)), int(m.group(3))) or m.group(0)


def _us_date(m: re.Match[str]) -> str:
    year = int(m.group(3))
    if len(m.group(3)) == 2:
        year += 2000
    return _say_date(year, int(m.group(1)), int(m.group(2))) or m.group(0)


# --- 4. times ------------------------------------------------------------------------------------------------

_MERIDIEM = r"(?:\s?([AaPp])\.?\s?[Mm](\.?)(?![\w]))"
_CLOCK = re.compile(r"(?<![\w:.])(\d{1,2}):([0-5]\d)(?::[0-5]\d)?(?![\d:])" + _MERIDIEM + r"?(?![\w:])")
_HOUR_ONLY = re.compile(r"(?<![\w:.])(1[0-2]|0?[1-9])" + _MERIDIEM)


def _restore_period(m: re.Match[str], dot: str | None) -> str:
    """Keep a sentence-ending "p.m." period so the sentence splitter still sees the boundary."""
    if not dot:
        return ""
    rest = m.string[m.end() :]
    return "." if not rest.strip() or re.match(r"\s+[A-Z0-9\"']", rest) else ""


def _clock(m: re.Match[str]) -> str:
    hour_s, minute = m.group(1), int(m.group(2))
    hour = int(hour_s)
    if hour > 23:
        return m.group(0)
    if m.group(3):
        if not 1 <= hour <= 12:
            return m.group(0)
        suffix = f" {m.group(3).upper()}M"
    elif hour == 0 or hour >= 13 or (hour_s.startswith("0") and len(hour_s) == 2):
        suffix = " PM" if hour >= 12 else " AM"
        hour = hour % 12 or 12
    else:
        suffix = ""
    mins = "" if minute == 0 else f" oh {minute}" if minute < 10 else f" {minute}"
    if not mins and not suffix:
        mins = " o'clock"
    return f"{hour}{mins}{suffix}{_restore_period(m, m.group(4))}"


def _hour_only(m: re.Match[str]) -> str:
    return f"{int(m.group(1))} {m.group(2).upper()}M{_restore_period(m, m.group(3))}"


# --- 5. money ------------------------------------------------------------------------------------------------

_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_MONEY = re.compile(
    r"(?<![\w.])(-\s?)?([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
    r"(?:\s(thousand|million|billion|trillion)\b)?(?![\d,]\d)"
)


def _money(m: re.Match[str]) -> str:
    minus, sym, whole, frac, scale = m.groups()
    one, many, sub_one, sub_many = _CURRENCIES[sym]
    sign = "minus " if minus else ""
    if scale:
        amount = whole + (f".{frac}" if frac else "")
        return f"{sign}{amount} {scale} {many}"
    if frac is not None and len(frac) > 2:  # "$0.125" is a rate, not dollars and cents
        return f"{sign}{whole}.{frac} {many}"
    units = int(whole.replace(",", ""))
    cents = int((frac or "0").ljust(2, "0"))
    parts = []
    if units or not cents:
        parts.append(f"{whole} {one if units == 1 else many}")
    if cents:
        parts.append(f"{cents} {sub_one if cents == 1 else sub_many}")
    return sign + " and ".join(parts)


# --- 6. identifiers ------------------------------------------------------------------------------------------

_HASH_ID = re.compile(r"#\s?([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)")
_TOKEN = re.compile(r"(?<![\w.,-])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w-]|[.,]\d)")
_ID_WORDS = (
    r"order|confirmation|reference|ref|account|acct|ticket|case|tracking|invoice|booking|reservation|member"
    r"|policy|claim|id|pin|code|zip|number|no\.|ending in"
)
_KEYWORD_NUMBER = re.compile(
    rf"\b((?:{_ID_WORDS})(?:\s+(?:number|no\.|id|code|is|was)){{0,2}}:?\s+)(\d{{3,}}(?:[- ]\d{{2,}})*)(?![\w.,]?\d)",
    re.IGNORECASE,
)


def _hash_id(m: re.Match[str]) -> str:
    return f"number {_spell_id(m.group(1))}"


def _mixed_token(m: re.Match[str]) -> str:
    tok = m.group(0)
    n_digits = sum(c.isdigit() for c in tok)
    if n_digits < 3 or n_digits == len(tok.replace("-", "")):
        return tok
    if re.fullmatch(r"\d+[A-Za-z]+", tok):  # 500GB, 100mg, 24th: a quantity with a unit or an ordinal
        return tok
    return _spell_id(tok)


def _keyword_number(m: re.Match[str]) -> str:
    return m.group(1) + _spell_id(m.group(2))


# --- 7. symbols ----------------------------------------------------------------------------------------------

_SYMBOLS = [(re.compile(r"\s?%"), " percent"), (re.compile(r"\s?&\s?"), " and ")]


def normalize_for_speech(text: str) -> str:
    """Rewrite ``text`` so Piper reads numbers, money, dates, times, phone numbers and ids naturally."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"\s+", " ", text).strip()
    text = _EMAIL.sub(_email, text)
    text = _PHONE_INTL.sub(_phone_intl, text)
    text = _PHONE_NANP.sub(_phone_nanp, text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _US_DATE.sub(_us_date, text)
    text = _CLOCK.sub(_clock, text)
    text = _HOUR_ONLY.sub(_hour_only, text)
    text = _MONEY.sub(_money, text)
    text = _HASH_ID.sub(_hash_id, text)
    text = _KEYWORD_NUMBER.sub(_keyword_number, text)
    text = _TOKEN.sub(_mixed_token, text)
    for pattern, spoken in _SYMBOLS:
        text = pattern.sub(spoken, text)
    return re.sub(r"\s+", " ", text).strip()


# --- sentences -----------------------------------------------------------------------------------------------

_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "st",
    "jr",
    "sr",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "inc",
    "ltd",
    "co",
    "approx",
    "dept",
    "ave",
    "blvd",
    "mt",
    "ft",
    "apt",
    "a.m",
    "p.m",
    "u.s",
}
# A boundary: sentence punctuation (and closing quotes/brackets) followed by whitespace.
_BOUNDARY = re.compile(r"([.!?]+[\"')\]]*)\s+")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences to synthesise one at a time.

    Splits after ``.``, ``!`` or ``?`` followed by whitespace, and at line breaks; not after common
    abbreviations ("Dr.", "e.g.", "No. 5") nor before a lower-case word ("3 p.m. tomorrow"); decimals like
    "2.5" have no space after the dot so they never split. Sentences longer than ``MAX_SENTENCE_CHARS``
    are cut after the last comma or semicolon that fits. Empty pieces are dropped.
    """
    out: list[str] = []
    for line in text.splitlines():
        start = 0
        for m in _BOUNDARY.finditer(line):
            before = line[start : m.start()].split()
            last_word = before[-1].lower().rstrip(".") if before else ""
            nxt = line[m.end() : m.end() + 1]
            if m.group(1).startswith(".") and (
                last_word in _ABBREVIATIONS or nxt.islower() or (last_word == "no" and nxt.isdigit())
            ):
                continue
            out.append(line[start : m.start() + len(m.group(1))])
            start = m.end()
        out.append(line[start:])
    return [piece for s in out for piece in _cut_long(s.strip()) if piece]


def _cut_long(sentence: str) -> list[str]:
    pieces = []
    while len(sentence) > MAX_SENTENCE_CHARS:
        cut = max(sentence.rfind(", ", 0, MAX_SENTENCE_CHARS), sentence.rfind("; ", 0, MAX_SENTENCE_CHARS))
        if cut <= 0:
            cut = sentence.rfind(" ", 0, MAX_SENTENCE_CHARS)
        if cut <= 0:
            break
        pieces.append(sentence[: cut + 1].strip())
        sentence = sentence[cut + 1 :].strip()
    pieces.append(sentence)
    return pieces


# Words a spoken clause naturally breaks before: the rest of the sentence reads as a new phrase after them.
_CLAUSE_STARTERS = frozenset(
    "and or but so because while when if where as to for with from on at by until unless after before since is was "
    "are were".split()
)
FIRST_CLAUSE_MIN_WORDS = 2
FIRST_CLAUSE_MAX_WORDS = 6


def split_first_clause(sentence: str) -> list[str]:
    """The first sentence of a reply cut after its opening clause, so the first audio is rendered sooner.

    Piper renders a whole sentence before any of it can play; its time grows with the sentence. The cut falls
    at a comma, semicolon, colon or dash within the first ``FIRST_CLAUSE_MAX_WORDS`` words, else before a word
    a clause starts with ("and", "to", "is", ...) after at least ``FIRST_CLAUSE_MIN_WORDS`` words, leaving at least
    three words after it, so each piece still reads as a phrase ("Sorry," | "that doesn't sound ..."). A
    sentence with no such point comes back whole.
    """
    words = sentence.split()
    last = min(FIRST_CLAUSE_MAX_WORDS, len(words) - 3)
    for i in range(1, last + 1):
        if words[i - 1][-1] in ",;:" or words[i] in ("-", "--", "\u2014"):
            return [" ".join(words[:i]), " ".join(words[i:])]
    for i in range(FIRST_CLAUSE_MIN_WORDS, last + 1):
        if words[i].lower().strip(",;:") in _CLAUSE_STARTERS:
            return [" ".join(words[:i]), " ".join(words[i:])]
    return [sentence]


LEAD_IN_MIN_WORDS = 3
# Words said with the words after them: a lead-in stops before them ("your delivery," | "of the espresso machine").
_BINDS_NEXT = frozenset(
    "a an the of for to in on at by with from about into your my our their his her its this these those".split()
)


class LeadIns:
    """The fixed words that templated replies start a sentence with, said from the prompt cache.

    "Thanks, I have noted that you said {said}." always begins "Thanks, I have noted that you said": rendered
    once, it is cut off every reply that begins with it, so the caller hears it at once and only the words that
    vary are rendered, while it plays. This is how contact-centre IVRs have always spoken templated replies (a
    recorded "Your balance is" before the amount); here the same voice says both, the lead-in ending in a comma so
    that it is read as an unfinished phrase, not as a sentence of its own.
    """

    def __init__(self) -> None:
        self._pieces: dict[str, str] = {}  # the words a sentence begins with -> the lead-in said for them
        self._longest_first: list[str] = []

    @staticmethod
    def of(start: str) -> tuple[list[str], str | None]:
        """For a template's words before its first placeholder: the whole sentences among them (fixed prompts)
        and the lead-in of the sentence the placeholder is in: up to the last comma or colon when only a few
        words follow it, else the words before the placeholder if there are `LEAD_IN_MIN_WORDS` (None when
        there is nothing to say apart)."""
        sentences = split_sentences(normalize_for_speech(start))
        # A placeholder that starts a sentence has no lead-in; one glued to a word ("#{id}") changes how the
        # words before it are read ("number 1 0 2"), so they are not a lead-in either.
        if not sentences or start.rstrip()[-1:] in ".!?" or not start[-1:].isspace():
            return sentences if start.rstrip()[-1:] in ".!?" else sentences[:-1], None
        *whole, last = sentences
        words = last.split()
        while words and words[-1].lower() in _BINDS_NEXT:
            words.pop()  # "... delivery of {item}": the pause falls before "of", not after it
        breaks = [i for i, word in enumerate(words) if word[-1] in ",;:"]
        if breaks and len(words) - breaks[-1] - 1 < LEAD_IN_MIN_WORDS + 1:
            # "Sorry, just to be sure: | is it about {topic}?": a few words before the placeholder are said with it.
            return whole, " ".join(words[: breaks[-1] + 1])
        if len(words) < LEAD_IN_MIN_WORDS:
            return whole, None  # "I heard {digits}": too short to say apart without sounding cut
        return whole, " ".join(words)

    def add(self, start: str) -> list[str]:
        """Registers the lead-in of a template's fixed start; returns what to render ahead of calls."""
        whole, words = self.of(start)
        if words is None:
            return whole
        piece = words if words[-1] in ",;:" else f"{words},"
        if words not in self._pieces:
            self._pieces[words] = piece
            self._longest_first = sorted(self._pieces, key=len, reverse=True)
        return [*whole, piece]

    def is_lead_in(self, sentence: str) -> bool:
        return sentence in self._pieces.values()

    def split(self, sentence: str) -> list[str] | None:
        """`sentence` as [lead-in, the rest] when it begins with a registered lead-in and has words after it."""
        for words in self._longest_first:
            if sentence.startswith(words) and sentence[len(words) : len(words) + 1] in (" ", ","):
                rest = sentence[len(words) :].lstrip(" ,")
                if any(ch.isalnum() for ch in rest):
                    return [self._pieces[words], rest]
        return None
