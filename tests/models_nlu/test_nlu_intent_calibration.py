"""Confidence means what it says: on phrases the model never saw, ~0.9 confident is ~90% right.

The held-out set (models/data/intents_heldout.yaml) is paraphrases plus out-of-scope chatter. A
business intent returned for out-of-scope text counts as wrong, so confident answers to nonsense hurt.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from models.intent import DATA_DIR, OUT_OF_SCOPE, IntentClassifier, preprocess

MIN_BIN = 10  # bins with fewer samples say little about accuracy


@dataclass
class Bin:
    low: float
    high: float
    n: int
    accuracy: float
    confidence: float


def _load(name: str) -> dict[str, list[str]]:
    return yaml.safe_load((DATA_DIR / name).read_text(encoding="utf-8"))["intents"]


@pytest.fixture(scope="module")
def heldout(classifier: IntentClassifier) -> list[tuple[str, str, str, float]]:
    """(text, true label, predicted intent, confidence) for every held-out phrase."""
    rows = []
    for label, phrases in _load("intents_heldout.yaml").items():
        for text in phrases:
            result = classifier.classify(text)
            rows.append((text, label, result.intent, result.confidence))
    return rows


def reliability_table(rows: list[tuple[str, str, str, float]], n_bins: int = 10) -> tuple[list[Bin], float]:
    bins: list[Bin] = []
    ece = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = [r for r in rows if low <= r[3] < high or (b == n_bins - 1 and r[3] == 1.0)]
        if not inside:
            continue
        acc = sum(r[1] == r[2] for r in inside) / len(inside)
        conf = sum(r[3] for r in inside) / len(inside)
        bins.append(Bin(low, high, len(inside), acc, conf))
        ece += len(inside) / len(rows) * abs(acc - conf)
    return bins, ece


def _format(bins: list[Bin], ece: float) -> str:
    lines = ["confidence    n  accuracy  mean-conf"]
    lines += [f"[{b.low:.1f},{b.high:.1f})  {b.n:4d}  {b.accuracy:8.2f}  {b.confidence:9.2f}" for b in bins]
    return "\n".join(lines + [f"ECE {ece:.3f}"])


def test_heldout_phrases_are_not_training_phrases() -> None:
    training = {preprocess(p) for phrases in _load("intents.yaml").values() for p in phrases}
    overlap = [p for phrases in _load("intents_heldout.yaml").values() for p in phrases if preprocess(p) in training]
    assert overlap == []


def test_heldout_covers_every_intent_and_out_of_scope(classifier: IntentClassifier) -> None:
    heldout = _load("intents_heldout.yaml")
    assert set(heldout) == set(classifier.intents) | {OUT_OF_SCOPE}
    assert all(len(v) >= 10 for v in heldout.values())


def test_reliability_table_accuracy_tracks_confidence(heldout) -> None:
    bins, ece = reliability_table(heldout)
    table = _format(bins, ece)
    print("\n" + table)
    populated = [b for b in bins if b.n >= MIN_BIN]
    assert populated, table
    for b in populated:
        assert abs(b.accuracy - b.confidence) <= 0.15, table
    assert ece < 0.1, table


def test_confident_answers_are_right_and_nonsense_is_not_answered(heldout) -> None:
    answered = [r for r in heldout if r[3] >= 0.85]
    in_scope = [r for r in heldout if r[1] != OUT_OF_SCOPE]
    wrong = [r for r in answered if r[1] != r[2]]
    assert len(wrong) <= 0.05 * len(answered), wrong
    # most clear paraphrases are handled without a clarifying question
    assert len([r for r in answered if r[1] != OUT_OF_SCOPE]) >= 0.7 * len(in_scope)
    assert sum(r[1] == r[2] for r in in_scope) >= 0.9 * len(in_scope)
    assert [r for r in heldout if r[1] == OUT_OF_SCOPE and r[3] >= 0.85] == []
