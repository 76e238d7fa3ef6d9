"""Shared NLU fixtures: one set of intent models per test session, one classifier per shipped flow.

Phrase embeddings are kept on disk (data/intent-cache, git-ignored), so only the first session on a machine
embeds the flows' phrases.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flows.cli import load_flow
from models.intent import IntentClassifier, IntentModels, IntentResult
from models.regions import RegionTable, load_regions
from models.sentiment import SentimentScorer
from tests.helpers.virtual_call import intent_classifier

FLOWS = ("banking", "ecommerce_delivery", "telecom_billing")
# Which shipped flow handles each intent (speak_to_agent and goodbye: every flow; the shop's is used).
FLOW_OF = {
    "track_order": "ecommerce_delivery",
    "delivery_problem": "ecommerce_delivery",
    "return_refund": "ecommerce_delivery",
    "cancel_order": "ecommerce_delivery",
    "billing_problem": "telecom_billing",
    "pay_bill": "telecom_billing",
    "top_up": "telecom_billing",
    "change_plan": "telecom_billing",
    "lost_card": "banking",
    "check_balance": "banking",
    "speak_to_agent": "ecommerce_delivery",
    "goodbye": "ecommerce_delivery",
}


@pytest.fixture(scope="session")
def intent_models() -> IntentModels:
    models: IntentModels = intent_classifier()
    return models


@pytest.fixture(scope="session")
def flow_classifiers(intent_models: IntentModels) -> dict[str, IntentClassifier]:
    return {name: intent_models.classifier(load_flow(name).intent_set().spec()) for name in FLOWS}


@pytest.fixture(scope="session")
def classify(flow_classifiers: dict[str, IntentClassifier]) -> Callable[[str, str], IntentResult]:
    """classify(text, intent the caller means): the result of the flow that handles that intent."""

    def run(text: str, meant: str) -> IntentResult:
        return flow_classifiers[FLOW_OF[meant]].classify(text)

    return run


@pytest.fixture(scope="session")
def regions() -> RegionTable:
    return load_regions()


@pytest.fixture(scope="session")
def scorer() -> SentimentScorer:
    return SentimentScorer()
