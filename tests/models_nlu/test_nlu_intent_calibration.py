"""Confidence means what it says: on phrases no flow was built from, confident answers are right.

The held-out set (models/data/intents_heldout.yaml) is paraphrases plus out-of-scope chatter. Each shipped flow
reads all of it: a phrase for an intent the flow does not have is out of scope there, and an intent returned for
it counts as wrong, so confident answers to other flows' requests and to nonsense hurt. The public sets are
measured by `python -m bench.nlu` (README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from flows.intent_library import library_names, load_library
from models.intent import OUT_OF_SCOPE, IntentClassifier, clean_text

DATA_DIR = Path(__file__).resolve().parents[2] / "models" / "data"
THRESHOLDS = {"banking": 0.92, "ecommerce_delivery": 0.85, "telecom_billing": 0.85}

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


@pytest.fixture(scope="module", params=sorted(THRESHOLDS))
def heldout(request: pytest.FixtureRequest, flow_classifiers: dict[str, IntentClassifier]) -> tuple[str, list[Row]]:
    """(flow, [(text, true label in this flow, predicted intent, confidence)]) for every held-out phrase."""
    flow = request.param
    classifier = flow_classifiers[flow]
    texts, labels = [], []
    for label, phrases in _load("intents_heldout.yaml").items():
        for text in phrases:
            texts.append(text)
            labels.append(label if label in classifier.intents else OUT_OF_SCOPE)
    results = classifier.classify_many(texts)
    return flow, [(t, lab, r.intent, r.confidence) for t, lab, r in zip(texts, labels, results, strict=True)]


Row = tuple[str, str, str, float]


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
    training = set()
    for name in library_names():
        lib = load_library(name)
        training |= {clean_text(p) for d in lib.intents.values() for p in d.examples}
        training |= {clean_text(p) for p in lib.out_of_scope}
    overlap = [p for phrases in _load("intents_heldout.yaml").values() for p in phrases if clean_text(p) in training]
    assert overlap == []


def test_heldout_covers_every_intent_and_out_of_scope(flow_classifiers: dict[str, IntentClassifier]) -> None:
    heldout = _load("intents_heldout.yaml")
    every = {i for c in flow_classifiers.values() for i in c.intents}
    assert set(heldout) == every | {OUT_OF_SCOPE}
    assert all(len(v) >= 10 for v in heldout.values())


def test_reliability_table(heldout: tuple[str, list[Row]]) -> None:
    flow, rows = heldout
    bins, ece = reliability_table(rows)
    table = _format(bins, ece)
    print(f"\n{flow}\n{table}")
    # Right answers are weighted 3:1 in calibration (models/intent.py), so the top bins run a little
    # over-confident by design; the error stays bounded.
    assert ece < 0.15, table


def test_confident_answers_are_right_and_other_requests_are_not_answered(heldout: tuple[str, list[Row]]) -> None:
    flow, rows = heldout
    threshold = THRESHOLDS[flow]
    answered = [r for r in rows if r[3] >= threshold]
    in_scope = [r for r in rows if r[1] != OUT_OF_SCOPE]
    out_of_scope = [r for r in rows if r[1] == OUT_OF_SCOPE]
    wrong = [r for r in answered if r[1] != r[2]]
    assert len(wrong) <= 0.05 * len(answered), wrong
    right = [r for r in answered if r[1] == r[2]]
    # Measured 84-89 % (README): the rest are clarified, not answered wrongly.
    assert len(right) >= 0.80 * len(in_scope), (flow, len(right), len(in_scope))
    assert len([r for r in out_of_scope if r[3] >= threshold]) <= 0.03 * len(out_of_scope)
