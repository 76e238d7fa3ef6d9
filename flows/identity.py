"""One customer identity across sources (caller ID, CRM, email, agent desk).

Sources write the same phone number many ways ("(415) 555-0100", "+1 415-555-0100",
"14155550100"); they only match once normalised. `match_key` hashes the normalised value so
records can be joined without passing raw phone numbers or emails around.
"""

from __future__ import annotations

import hashlib

import phonenumbers


def normalise_phone(raw: str, default_region: str = "US") -> str:
    """Return the number in E.164 ("+14155550100"); ValueError if it is not a valid number.

    `default_region` applies only to numbers written without a country code.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("phone number is empty")
    text = raw.strip()
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {text!r} ({exc})") from None
    # is_valid_number (not just is_possible_number) so that typos and withheld caller IDs
    # such as "+266696687" never match a real customer.
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"not a valid phone number: {text!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    """Strip and lower-case; ValueError unless it looks like local@domain."""
    if not isinstance(raw, str):
        raise ValueError("email is not a string")
    email = raw.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or not domain or "@" in domain or any(c.isspace() for c in email):
        raise ValueError(f"not an email address: {raw!r}")
    return email


def match_key(value: str, default_region: str = "US") -> str:
    """SHA-256 hex of the normalised phone number or email (anything with an "@" is an email).

    Raises ValueError when the value is neither a valid phone number nor an email.
    """
    if isinstance(value, str) and "@" in value:
        normalised = normalise_email(value)
    else:
        normalised = normalise_phone(value, default_region)
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()
