"""Identity: the same customer written differently by different sources must match."""

from __future__ import annotations

import pytest

from flows.identity import match_key, normalise_email, normalise_phone


@pytest.mark.parametrize(
    "raw",
    ["(415) 555-0100", "+1 415-555-0100", "415.555.0100", "14155550100", " +14155550100 ", "+1 (415) 555 0100"],
)
def test_us_formats_normalise_to_one_e164_number(raw: str) -> None:
    assert normalise_phone(raw) == "+14155550100"


def test_default_region_applies_only_without_country_code() -> None:
    assert normalise_phone("020 7946 0958", default_region="GB") == "+442079460958"
    assert normalise_phone("+1 415 555 0100", default_region="GB") == "+14155550100"


@pytest.mark.parametrize("raw", ["", "   ", "anonymous", "12345", "+266696687", "555-0100-99999"])
def test_invalid_numbers_raise_a_clear_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match="phone"):
        normalise_phone(raw)


def test_email_is_stripped_and_lower_cased() -> None:
    assert normalise_email("  Maria.Garcia@Example.COM ") == "maria.garcia@example.com"


@pytest.mark.parametrize("raw", ["", "no-at-sign", "@example.com", "maria@", "a@b@c", "ma ria@example.com"])
def test_bad_emails_raise_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match="email"):
        normalise_email(raw)


def test_two_sources_writing_one_number_differently_share_a_match_key() -> None:
    assert match_key("(415) 555-0100") == match_key("+14155550100")
    assert match_key("MARIA.garcia@example.com ") == match_key("maria.garcia@example.com")


def test_match_key_is_a_sha256_hex_that_separates_different_people() -> None:
    key = match_key("+14155550100")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != match_key("+14155550101")
    assert key != match_key("maria.garcia@example.com")
    # the key hides the number it came from
    assert "4155550100" not in key


def test_match_key_refuses_values_that_are_neither_phone_nor_email() -> None:
    with pytest.raises(ValueError):
        match_key("not a number")
