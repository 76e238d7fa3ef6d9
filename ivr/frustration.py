"""Per-call frustration, 0..1, folded from every turn of a call into its `CallContext`.

The scoring of one utterance is stateless and lives in `models.sentiment`; the state of a call (its
evidence so far, `CallContext.frustration`) belongs to the server, so it lives here.
"""

from __future__ import annotations

import math

from flows.context import CallContext
from models.sentiment import MILD_NEGATIVE_PHRASES, SentimentResult

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
