"""Regional wording is rewritten before intent detection, so local callers are understood."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from models.intent import IntentResult
from models.regions import Region, RegionTable, UnknownRegionError, get_region, load_regions


@pytest.mark.parametrize(
    "region,text,expected",
    [
        ("us_west", "where's me parcel", "track_order"),
        ("us_west", "I need to top up", "top_up"),
        ("us_west", "recharge my cell", "top_up"),
        ("us_west", "Can you put credit on my cellphone", "top_up"),
        ("us_west", "my wallet got pinched", "lost_card"),
        ("eu_central", "Handy aufladen", "top_up"),
        ("eu_central", "meine Kreditkarte wurde geklaut", "lost_card"),
        ("eu_central", "where is my Paket", "track_order"),
    ],
)
def test_normalise_then_classify(
    regions: RegionTable, classify: Callable[[str, str], IntentResult], region: str, text: str, expected: str
) -> None:
    normalised = regions[region].normalise(text)
    result = classify(normalised, expected)
    assert result.intent == expected, (normalised, result)
    assert result.confidence >= 0.85, (normalised, result)


def test_us_west_rewrites_slang_longest_phrase_first(regions: RegionTable) -> None:
    us = regions["us_west"]
    assert us.normalise("Where's ME PARCEL?") == "Where's my package?"  # not "me package"
    assert us.normalise("recharge my cell") == "top up my mobile"
    assert us.normalise("I'd like to  top up  please") == "I'd like to top up please"
    assert us.normalise("put credit on my phone") == "top up my phone"


def test_replacement_respects_word_boundaries(regions: RegionTable) -> None:
    us = regions["us_west"]
    assert us.normalise("excellent cellular coverage") == "excellent cellular coverage"
    assert us.normalise("the parcelforce van") == "the parcelforce van"


def test_eu_central_maps_local_words(regions: RegionTable) -> None:
    eu = regions["eu_central"]
    assert eu.normalise("Meine Kreditkarte") == "Meine EC-Karte"
    assert eu.normalise("I missed the colectivo") == "I missed the bus"
    assert eu.normalise("my HANDY is broken") == "my mobile is broken"


def test_region_configuration(regions: RegionTable) -> None:
    us, eu = regions["us_west"], regions["eu_central"]
    assert us.language == "en-US" and {"ccpa", "pci-dss"} <= set(us.compliance_tags)
    assert eu.language == "de-DE" and "en" in eu.secondary_languages
    assert {"gdpr", "pci-dss", "psd2"} <= set(eu.compliance_tags)


def test_unknown_region_lists_known_ones(regions: RegionTable) -> None:
    with pytest.raises(UnknownRegionError) as err:
        regions["mars_north"]
    message = str(err.value)
    assert "mars_north" in message and "us_west" in message and "eu_central" in message
    with pytest.raises(KeyError, match="us_west"):
        get_region("atlantis")


def test_region_without_slang_only_tidies_whitespace() -> None:
    plain = Region("plain", "en-GB", [], {})
    assert plain.normalise("  where's me   parcel ") == "where's me parcel"


@pytest.mark.parametrize(
    "body,problem",
    [
        ("regions: {}\n", "non-empty 'regions'"),
        ("regions:\n  x: {compliance_tags: []}\n", "'language' is required"),
        ("regions:\n  x: {language: en, slang: {ja: yes}}\n", "quote yes/no"),
        ("regions:\n  x: {language: en, compliance_tags: gdpr}\n", "compliance_tags must be a list"),
    ],
)
def test_malformed_region_file_is_refused_clearly(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "regions.yaml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        load_regions(path)
