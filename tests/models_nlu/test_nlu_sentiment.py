"""Angry callers are noticed (and escalated by the policy using ctx.frustration); calm ones are left alone."""

from __future__ import annotations

import pytest

from flows.context import CallContext
from ivr.frustration import FrustrationTracker
from models.sentiment import SentimentScorer, emphasis

# Voice calls: Whisper-style transcripts, no shouty capitals; loudness in estimated dB SPL.
ANGRY_VOICE_CALL = [
    ("Where is my parcel? It was meant to come last week.", 70.0),
    ("This is ridiculous, I have been waiting for ages.", 74.0),
    ("As I already said, the tracking has not moved in days. Useless.", 80.0),
    ("I want to speak to a human right now.", 83.0),
    ("If this is not sorted I will be contacting my lawyer.", 81.0),
]
CALM_VOICE_CALL = [
    ("Hi there, I would like to check on my order please.", 62.0),
    ("Sure, the order number is one two three four.", 60.0),
    ("Oh I see. I lost my card last week so I paid with a different one.", 61.0),
    ("Yes, that's right.", 60.0),
    ("Lovely, thank you very much. Bye!", 63.0),
]


def _run(scorer: SentimentScorer, turns: list[tuple[str, float | None]]) -> tuple[CallContext, list[float]]:
    ctx = CallContext(call_sid="CA-test")
    tracker = FrustrationTracker(shouting_spl_db=78.0)
    return ctx, [tracker.update(ctx, scorer.score(text), loudness) for text, loudness in turns]


def test_polite_and_angry_utterances(scorer: SentimentScorer) -> None:
    polite = scorer.score("Thank you so much, that was really helpful.")
    angry = scorer.score("This is unacceptable, I am really disappointed. Worst service ever.")
    assert polite.compound > 0.3
    assert angry.compound < -0.3
    assert polite.negative_phrases == [] and polite.emphasis == 0.0
    assert {"unacceptable", "disappointed", "worst"} <= set(angry.negative_phrases)


def test_cues_are_detected(scorer: SentimentScorer) -> None:
    legal = scorer.score("I'll sue you, my attorney is taking legal action and I'm going to the ombudsman")
    assert legal.legal_words == ["sue", "attorney", "legal action", "ombudsman"]
    passive = scorer.score("As per my last email, and for the third time, with all due respect")
    assert passive.passive_aggressive == ["as per my last email", "for the third time", "with all due respect"]
    assert scorer.score("that sounds like a pursuit").legal_words == []  # word boundaries


def test_emphasis_from_caps_exclamations_and_stretched_words() -> None:
    assert emphasis("THIS IS RIDICULOUS!!!") > 0.7
    assert emphasis("this is sooooo slow") > 0.0
    assert emphasis("Thanks, bye!") == 0.0
    assert emphasis("My PIN and the ATM at the USA branch") == 0.0  # acronyms are not shouting
    assert emphasis("I want a HUMAN") > emphasis("I want a human")


def test_angry_call_crosses_escalation_level_and_never_falls(scorer: SentimentScorer) -> None:
    ctx, levels = _run(scorer, ANGRY_VOICE_CALL)
    assert levels[-1] > 0.7
    assert levels == sorted(levels)
    assert ctx.frustration == levels[-1]
    assert ctx.shouting_turns == 3  # 80, 83 and 81 dB are over 78
    assert ctx.legal_words == ["lawyer"]
    assert {"ridiculous", "useless"} <= set(ctx.negative_phrases)
    assert len(ctx.sentiment_trend) == len(ANGRY_VOICE_CALL)


def test_calm_call_stays_low(scorer: SentimentScorer) -> None:
    ctx, levels = _run(scorer, CALM_VOICE_CALL)
    assert max(levels) < 0.3
    assert ctx.shouting_turns == 0 and ctx.legal_words == []


def test_loudness_is_the_shouting_signal_on_voice(scorer: SentimentScorer) -> None:
    text = "i want to speak to someone about my bill"  # ASR text: no caps, no exclamation marks
    quiet, _ = _run(scorer, [(text, 65.0)] * 3)
    loud, _ = _run(scorer, [(text, 86.0)] * 3)
    assert loud.shouting_turns == 3 and quiet.shouting_turns == 0
    assert loud.frustration > quiet.frustration + 0.3


def test_more_negative_evidence_means_more_frustration(scorer: SentimentScorer) -> None:
    base = [("this is not good enough", None), ("it is ridiculous", None)]
    _, fewer = _run(scorer, base)
    _, more = _run(scorer, base + [("useless, a complete waste of time", None)])
    _, legal = _run(scorer, base + [("i will take you to small claims court", None)])
    assert more[-1] > fewer[-1]
    assert legal[-1] > fewer[-1]


def test_long_silences_count_as_confusion(scorer: SentimentScorer) -> None:
    ctx = CallContext(call_sid="CA-silence")
    tracker = FrustrationTracker()
    silent = scorer.score("")
    first = tracker.update(ctx, silent, long_silence=True)
    second = tracker.update(ctx, silent, long_silence=True)
    assert ctx.long_silences == 2
    assert 0.0 < first < second < 0.3  # confusion, not anger


def test_frustration_is_not_lowered_below_an_earlier_value(scorer: SentimentScorer) -> None:
    ctx = CallContext(call_sid="CA-back-from-agent", frustration=0.6)
    assert FrustrationTracker().update(ctx, scorer.score("thanks, that's great"), 60.0) == pytest.approx(0.6)
