"""Shared NLU fixtures: the intent model trains once per test session (a fraction of a second)."""

from __future__ import annotations

import pytest

from models.intent import IntentClassifier
from models.regions import RegionTable, load_regions
from models.sentiment import SentimentScorer


@pytest.fixture(scope="session")
def classifier() -> IntentClassifier:
    return IntentClassifier.load()


@pytest.fixture(scope="session")
def regions() -> RegionTable:
    return load_regions()


@pytest.fixture(scope="session")
def scorer() -> SentimentScorer:
    return SentimentScorer()
