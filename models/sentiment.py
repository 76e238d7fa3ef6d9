"""Per-utterance sentiment and cues, and the per-call frustration score built from them.

``SentimentScorer`` gives VADER's compound score (-1..1) plus the cues a human supervisor listens for:
negative phrases, legal threats, passive-aggressive phrasing and typographic emphasis (ALL CAPS, "!!!",
"sooooo"). ``FrustrationTracker`` folds every turn of a call into ``CallContext.frustration`` (0..1).

ASR transcripts carry no capitals or exclamation marks that mean anything, so on voice calls the caller's
loudness (estimated dB SPL from audio/) is the main shouting signal; emphasis mostly matters on text channels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from flows.context import CallContext

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
    "sue",
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
_PASSIVE_RE = _phrase_pattern(PASSIVE_AGGRESSIVE_PHRASES)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z']*")
_EXCLAIM_RE = re.compile(r"!")
_REPEATED_LETTERS_RE = re.compile(r"([A-Za-z])\1{2,}")  # "sooo", "pleeease"


def _found(pattern: re.Pattern[str], text: str) -> list[str]:
    return [" ".join(m.group(0).lower().split()) for m in pattern.finditer(text)]


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
        text = text.replace("\u2019", "'")
        compound = float(self._vader.polarity_scores(text)["compound"]) if text.strip() else 0.0
        passive = _found(_PASSIVE_RE, text)
        return SentimentResult(
            compound=compound,
            negative_phrases=_found(_NEGATIVE_RE, text),
            legal_words=_found(_LEGAL_RE, text),
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


# Keys this module keeps in CallContext.flags for evidence CallContext has no field for.
PASSIVE_AGGRESSIVE_FLAG = "sentiment.passive_aggressive"
EMPHASIS_SUM_FLAG = "sentiment.emphasis_sum"


class FrustrationTracker:
    """Per-call frustration, 0..1, from all the evidence of the call so far.

    Evidence E is a weighted sum over the whole call; frustration = 1 - exp(-E). Every term only grows as
    turns are added, so frustration never falls during a call (it is also never set below its previous
    value), and a calm, polite call has E ~ 0. Weights (units of E; E = 1.2 gives 0.70):

      negative phrase ("unacceptable", "useless", "worst", ...)   0.30 each
      mild negative phrase ("cancel", "complaint")                0.10 each  (said calmly all the time)
      legal word ("sue", "lawyer", "ombudsman", ...)              0.60 each
      passive-aggressive phrase ("as I already said", ...)        0.35 each
      shouting turn (loudness over shouting_spl_db)               0.35 each  (main signal on voice calls)
      emphasis (0..1 per turn: caps, "!!!", "sooo")               0.50 x emphasis
      negative sentiment beyond -0.25 (VADER compound)            0.60 x (-compound - 0.25) per turn
      long silence (confusion rather than anger)                  0.10 each
    """

    W_NEGATIVE = 0.30
    W_MILD_NEGATIVE = 0.10
    W_LEGAL = 0.60
    W_PASSIVE_AGGRESSIVE = 0.35
    W_SHOUTING = 0.35
    W_EMPHASIS = 0.50
    W_NEGATIVE_SENTIMENT = 0.60
    SENTIMENT_DEADBAND = 0.25  # "I lost my card" scores about -0.3 without any frustration in it
    W_LONG_SILENCE = 0.10

    def __init__(self, shouting_spl_db: float = 78.0) -> None:
        self.shouting_spl_db = shouting_spl_db

    def update(
        self,
        ctx: CallContext,
        result: SentimentResult,
        loudness_spl_db: float | None = None,
        long_silence: bool = False,
    ) -> float:
        """Record one caller turn (or one long silence) into ``ctx`` and return the new ``ctx.frustration``."""
        ctx.sentiment_trend.append(result.compound)
        ctx.negative_phrases.extend(result.negative_phrases)
        ctx.legal_words.extend(result.legal_words)
        passive: list[str] = ctx.flags.setdefault(PASSIVE_AGGRESSIVE_FLAG, [])
        passive.extend(result.passive_aggressive)
        ctx.flags[EMPHASIS_SUM_FLAG] = float(ctx.flags.get(EMPHASIS_SUM_FLAG, 0.0)) + result.emphasis
        if loudness_spl_db is not None and loudness_spl_db > self.shouting_spl_db:
            ctx.shouting_turns += 1
        if long_silence:
            ctx.long_silences += 1
        ctx.frustration = max(ctx.frustration, self.frustration(ctx))
        return ctx.frustration

    def evidence(self, ctx: CallContext) -> float:
        mild = sum(1 for p in ctx.negative_phrases if p in MILD_NEGATIVE_PHRASES)
        strong = len(ctx.negative_phrases) - mild
        negative_sentiment = sum(max(0.0, -c - self.SENTIMENT_DEADBAND) for c in ctx.sentiment_trend)
        return (
            self.W_NEGATIVE * strong
            + self.W_MILD_NEGATIVE * mild
            + self.W_LEGAL * len(ctx.legal_words)
            + self.W_PASSIVE_AGGRESSIVE * len(ctx.flags.get(PASSIVE_AGGRESSIVE_FLAG, ()))
            + self.W_SHOUTING * ctx.shouting_turns
            + self.W_EMPHASIS * float(ctx.flags.get(EMPHASIS_SUM_FLAG, 0.0))
            + self.W_NEGATIVE_SENTIMENT * negative_sentiment
            + self.W_LONG_SILENCE * ctx.long_silences
        )

    def frustration(self, ctx: CallContext) -> float:
        """1 - exp(-evidence): 0 with no evidence, rising towards 1 and never above it."""
        return 1.0 - math.exp(-self.evidence(ctx))
