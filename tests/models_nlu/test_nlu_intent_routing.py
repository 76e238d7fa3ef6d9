"""What a caller notices: the bot sends them where they asked to go, and asks when it is unsure."""

from __future__ import annotations

from pathlib import Path

import pytest
import sklearn

from models.intent import BUSINESS_INTENTS, IntentClassifier, IntentResult, decide, parse_yes_no

CLEAR = [
    ("I can't pay my bill", "billing_problem"),
    ("I cannot pay my phone bill this month", "billing_problem"),
    ("I won't be able to pay the gas bill", "billing_problem"),
    ("I want to pay my bill", "pay_bill"),
    ("I'd like to pay my phone bill please", "pay_bill"),
    ("my bill's too high", "billing_problem"),
    ("I can't afford my bill", "billing_problem"),
    ("where's me parcel", "track_order"),
    ("Where is my package?", "track_order"),
    ("top up my phone", "top_up"),
    ("recharge my mobile", "top_up"),
    ("put credit on my phone", "top_up"),
    ("block my card", "lost_card"),
    ("nicked wallet", "lost_card"),
    ("speak to a human", "speak_to_agent"),
    ("operator", "speak_to_agent"),
    ("get me a real person", "speak_to_agent"),
    ("I want to cancel my order", "cancel_order"),
    ("my parcel arrived damaged", "delivery_problem"),
    ("I'd like a refund please", "return_refund"),
    ("what's my balance", "check_balance"),
    ("thanks, that's all, goodbye", "goodbye"),
]


@pytest.mark.parametrize("text,expected", CLEAR)
def test_clear_requests_route_confidently(classifier: IntentClassifier, text: str, expected: str) -> None:
    result = classifier.classify(text)
    assert result.intent == expected, result
    assert result.confidence >= 0.85, result
    assert decide(result, 0.85) == "answer"


def test_negation_separates_a_billing_problem_from_a_payment(classifier: IntentClassifier) -> None:
    cant = classifier.classify("I can't pay my bill")
    want = classifier.classify("I want to pay my bill")
    unable = classifier.classify("I'm unable to pay my bill")
    assert (cant.intent, want.intent, unable.intent) == ("billing_problem", "pay_bill", "billing_problem")
    # the other reading is still offered as an alternative, just unlikely
    assert "pay_bill" in dict(cant.alternatives)


@pytest.mark.parametrize(
    "text", ["what's the weather like", "blue elephant sandwich", "who won the football", "", "   ?! "]
)
def test_out_of_scope_text_is_never_answered_confidently(classifier: IntentClassifier, text: str) -> None:
    result = classifier.classify(text)
    assert result.intent in BUSINESS_INTENTS  # never "out_of_scope": flows only know the business names
    assert result.confidence < 0.5
    # "none of these" is the single most likely reading
    assert result.out_of_scope > result.confidence
    assert decide(result, 0.85) == "clarify"


def test_probabilities_and_alternatives_are_consistent(classifier: IntentClassifier) -> None:
    probs = classifier.probabilities("my refund hasn't come through yet")
    assert abs(sum(probs.values()) - 1.0) < 1e-6
    result = classifier.classify("my refund hasn't come through yet")
    assert result.intent == max((i for i in probs if i != "out_of_scope"), key=probs.get)
    assert [c for _, c in result.alternatives] == sorted((c for _, c in result.alternatives), reverse=True)
    assert all(c <= result.confidence for _, c in result.alternatives)
    assert result.intent not in dict(result.alternatives)


def test_classifier_exposes_the_intent_names_and_data_version(classifier: IntentClassifier) -> None:
    assert sorted(classifier.intents) == sorted(BUSINESS_INTENTS)
    assert len(classifier.intents) == 12
    assert classifier.version == "1"


def test_regulated_threshold_asks_more_often() -> None:
    borderline = IntentResult("pay_bill", 0.9, [("billing_problem", 0.08)])
    assert decide(borderline, 0.85) == "answer"
    assert decide(borderline, 0.92) == "clarify"
    with pytest.raises(ValueError):
        decide(borderline, 0.0)


def test_classify_rejects_non_text(classifier: IntentClassifier) -> None:
    with pytest.raises(TypeError):
        classifier.classify(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("yes", True),
        ("Yeah, that's right.", True),
        ("correct", True),
        ("yep please do", True),
        ("absolutely", True),
        ("no", False),
        ("nope", False),
        ("that's wrong", False),
        ("no, that's not right", False),
        ("that isn't correct", False),
        ("absolutely not", False),
        ("not sure", None),
        ("", None),
        ("banana", None),
        ("yes... no wait", None),
    ],
)
def test_parse_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


def test_data_file_missing_an_intent_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "intents.yaml"
    bad.write_text("version: 9\nintents:\n  track_order: [a, b, c, d, e]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing intents.*pay_bill"):
        IntentClassifier.load(bad)


def test_bare_yaml_booleans_are_reported_not_trained_on(tmp_path: Path) -> None:
    bad = tmp_path / "intents.yaml"
    bad.write_text("version: 9\nintents:\n  goodbye: [bye, yes, ok, ta, cheers]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="quote yes/no"):
        IntentClassifier.load(bad)


def test_disk_cache_is_written_and_a_corrupt_one_is_replaced(tmp_path: Path, classifier: IntentClassifier) -> None:
    corrupt = tmp_path / f"intent-v1-{classifier.data_sha256[:16]}-skl{sklearn.__version__}.pkl"
    corrupt.write_bytes(b"not a pickle")
    cached = IntentClassifier.load(cache_dir=tmp_path)
    assert corrupt.read_bytes() != b"not a pickle"  # retrained and rewritten
    text = "has my order been dispatched yet"
    assert cached.probabilities(text) == pytest.approx(classifier.probabilities(text))
