"""Per-utterance sentiment and cues: stateless, one scorer per process.

``SentimentScorer`` gives VADER's compound score (-1..1) plus the cues a human supervisor listens for:
negative phrases, legal threats, passive-aggressive phrasing and typographic emphasis (ALL CAPS, "!!!",
"sooooo"). The per-call frustration score built from them is `ivr.frustration.FrustrationTracker`.

ASR transcripts carry no capitals or exclamation marks that mean anything, so on voice calls the caller's
loudness (estimated dB SPL from audio/) is the main shouting signal; emphasis mostly matters on text channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Cue lexicons. Matched case-insensitively on word boundaries; multi-word phrases allow any whitespace.
NEGATIVE_PHRASES: tuple[str, ...] = (
    "unacceptable",
    "disappointed",
    "disappointing",
    "cancel",
    "ridiculous",
    "useless",
    "waste of time",
    "worst",
    "terrible",
    "awful",
    "horrible",
    "pathetic",
    "disgusting",
    "disgrace",
    "disgraceful",
    "outrageous",
    "appalling",
    "rubbish",
    "incompetent",
    "furious",
    "angry",
    "livid",
    "fuming",
    "fed up",
    "sick of",
    "sick and tired",
    "had enough",
    "nonsense",
    "a joke",
    "shambles",
    "hopeless",
    "never again",
    "complaint",
    "complain",
    "stupid",
    "idiot",
    "idiots",
    "frustrated",
    "frustrating",
    "annoyed",
    "not happy",
    "unhappy",
    "poor service",
    "bad service",
    "hate",
    "bloody",
    "crap",
)
# Business vocabulary that is negative but routinely said calmly ("I'd like to cancel my order").
MILD_NEGATIVE_PHRASES: frozenset[str] = frozenset({"cancel", "complaint", "complain"})
LEGAL_WORDS: tuple[str, ...] = (
    "suing",
    "lawyer",
    "lawyers",
    "attorney",
    "legal action",
    "ombudsman",
    "small claims",
    "solicitor",
    "lawsuit",
    "class action",
    "take you to court",
    "see you in court",
    "trading standards",
    "better business bureau",
    "consumer protection",
)
PASSIVE_AGGRESSIVE_PHRASES: tuple[str, ...] = (
    "as per my last email",
    "as per my previous email",
    "per my last email",
    "as i already said",
    "as i've already said",
    "as i have already said",
    "as i said before",
    "as i said",
    "like i said",
    "i already told you",
    "i've already told you",
    "i have already told you",
    "for the third time",
    "for the second time",
    "for the hundredth time",
    "for the last time",
    "with all due respect",
    "how many times",
    "once again",
    "thanks in advance",
    "no offence but",
    "no offense but",
)
# Upper-case tokens that are names, not shouting.
_ACRONYMS = frozenset(
    {
        "I",
        "OK",
        "ID",
        "PIN",
        "SMS",
        "ATM",
        "USA",
        "US",
        "UK",
        "EU",
        "EC",
        "VAT",
        "IBAN",
        "TV",
        "PC",
        "SIM",
        "ETA",
        "FAQ",
        "PDF",
        "CEO",
        "BBB",
        "DHL",
        "UPS",
        "USPS",
        "FEDEX",
        "GDPR",
        "PSD",
        "AM",
        "PM",
        "IVR",
    }
)


def _phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    alternatives = sorted(set(phrases), key=len, reverse=True)
    body = "|".join(r"\s+".join(re.escape(w) for w in p.split()) for p in alternatives)
    return re.compile(rf"(?<![\w'])(?:{body})(?![\w'])", re.IGNORECASE)


_NEGATIVE_RE = _phrase_pattern(NEGATIVE_PHRASES)
_LEGAL_RE = _phrase_pattern(LEGAL_WORDS)
# "Sue" is also a name ("my wife Sue called"): the verb only with a subject or object around it.
_SUE_VERB_RE = re.compile(
    r"(?<![\w'])(?:(?:(?:i|we)(?:'ll| will| shall| am going to|'m going to| are going to|'re going to| want to| could"
    r"| can| should| might| would)|gonna|to)\s+sue|sue\s+(?:you|u|them|the company|your company|this company"
    r"|your firm|for|over))(?![\w'])",
    re.IGNORECASE,
)
# Legal words in phrases that are no threat: a caller holding power of attorney, the attorney general.
_NOT_LEGAL_RE = re.compile(r"power\s+of\s+attorney|attorney\s+general|lasting\s+power", re.IGNORECASE)
# Whisper tiny hears an angry "unacceptable" as "an acceptable" at the end of a sentence; in English "an
# acceptable" always has a noun after it.
_ASR_UNACCEPTABLE_RE = re.compile(r"(?<![\w'])an\s+acceptable(?=\s*(?:[.!?,]|$))", re.IGNORECASE)
_PASSIVE_RE = _phrase_pattern(PASSIVE_AGGRESSIVE_PHRASES)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z']*")
_EXCLAIM_RE = re.compile(r"!")
_REPEATED_LETTERS_RE = re.compile(r"([A-Za-z])\1{2,}")  # "sooo", "pleeease"


def _found(pattern: re.Pattern[str], text: str) -> list[str]:
    """Each cue once per utterance, in first-mention order: "cancel, cancel, cancel" is one negative phrase."""
    found = (" ".join(m.group(0).lower().split()) for m in pattern.finditer(text))
    return list(dict.fromkeys(found))


def legal_cues(text: str) -> list[str]:
    """Legal-threat words read in context: "I'll sue you" is one, "my wife Sue" and "power of attorney" are not."""
    cleaned = _NOT_LEGAL_RE.sub(" ", text)
    found = [(m.start(), " ".join(m.group(0).lower().split())) for m in _LEGAL_RE.finditer(cleaned)]
    found += [(m.start(), "sue") for m in _SUE_VERB_RE.finditer(cleaned)]
    return list(dict.fromkeys(word for _, word in sorted(found)))


def fix_asr_quirks(text: str) -> str:
    """Undo transcription slips that flip sentiment ("This is an acceptable." for "This is unacceptable.")."""
    return _ASR_UNACCEPTABLE_RE.sub("unacceptable", text)


@dataclass(frozen=True)
class SentimentResult:
    compound: float  # VADER compound, -1 (hostile) .. 1 (delighted)
    negative_phrases: list[str]
    legal_words: list[str]
    passive_aggressive: list[str]
    emphasis: float  # 0..1 from ALL CAPS words, "!!!", repeated letters


class SentimentScorer:
    """VADER plus cue detection. One instance per process is enough; scoring is pure and thread-safe."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._vader = SentimentIntensityAnalyzer()

    def score(self, text: str) -> SentimentResult:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        text = fix_asr_quirks(text.replace("\u2019", "'"))
        compound = float(self._vader.polarity_scores(text)["compound"]) if text.strip() else 0.0
        passive = _found(_PASSIVE_RE, text)
        return SentimentResult(
            compound=compound,
            negative_phrases=_found(_NEGATIVE_RE, text),
            legal_words=legal_cues(text),
            passive_aggressive=passive,
            emphasis=emphasis(text),
        )


def emphasis(text: str) -> float:
    """0..1: 0.5 x caps + 0.3 x exclamation + 0.2 x stretched words, each part saturating at 1.

    caps: share of words (2+ letters, not acronyms) in ALL CAPS, doubled, so half the words shouted is full.
    exclamation: ("!" count - 1) / 2, so "!!!" is full. Stretched words: count of "sooo"-style words / 2.
    """
    words = [w for w in _WORD_RE.findall(text) if sum(c.isalpha() for c in w) >= 2]
    caps = [w for w in words if w.isupper() and w.upper().replace("'", "") not in _ACRONYMS]
    caps_part = min(1.0, 2.0 * len(caps) / len(words)) if words else 0.0
    # A single "!" is ordinary punctuation ("Thanks, bye!"); each further one counts.
    exclaim_part = min(1.0, max(0, len(_EXCLAIM_RE.findall(text)) - 1) / 2.0)
    stretched_part = min(1.0, len(_REPEATED_LETTERS_RE.findall(text)) / 2.0)
    return min(1.0, 0.5 * caps_part + 0.3 * exclaim_part + 0.2 * stretched_part)
