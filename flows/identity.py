"""One customer identity across sources (caller ID, CRM, email, agent desk).

Sources write the same phone number many ways ("(415) 555-0100", "+1 415-555-0100",
"14155550100"); they only match once normalised. `match_key` hashes the normalised value so
records can be joined without passing raw phone numbers or emails around.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import phonenumbers

from flows.context import Customer


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


def customer_from_result(result: Mapping[str, object], *, phone: str | None = None) -> Customer | None:
    """A customer record from a backend (`crm.customer_by_phone`) as a `Customer`; None for {"found": false}.

    The one converter, for the HTTP gateway's validated results and for any other gateway's (scripted
    tests, a future backend). It forgives what a flow can live without (a missing name, tier or list,
    a lifetime value that is not a number) and refuses a record without ``customer_id`` (ValueError).
    The phone is the record's (``phone`` or ``phone_e164``), else ``phone`` (the caller ID used for the
    lookup), in E.164; a number that is not valid is dropped. The match key is that of the phone number,
    else of the email.
    """
    if result.get("found") is False:
        return None
    customer_id = result.get("customer_id")
    if not customer_id:
        raise ValueError("customer record without customer_id")
    phone_e164 = None
    for raw in (result.get("phone"), result.get("phone_e164"), phone):
        if isinstance(raw, str):
            try:
                phone_e164 = normalise_phone(raw)
                break
            except ValueError:
                continue
    email = result.get("email")
    email = email if isinstance(email, str) and email else None
    key = None
    for value in (phone_e164, email):
        if value:
            try:
                key = match_key(value)
                break
            except ValueError:
                continue
    ltv = result.get("lifetime_value")
    try:
        lifetime_value = float(ltv) if isinstance(ltv, int | float | str) else 0.0
    except ValueError:
        lifetime_value = 0.0
    return Customer(
        customer_id=str(customer_id),
        name=str(result.get("name") or ""),
        phone_e164=phone_e164,
        email=email,
        match_key=key,
        lifetime_value=lifetime_value,
        tier=str(result.get("tier") or "standard"),
        preferred_channel=str(result.get("preferred_channel") or "voice"),
        orders=_records(result.get("orders")),
        tickets=_records(result.get("tickets")),
    )


def _records(value: object) -> list[dict[str, object]]:
    return [dict(item) for item in value if isinstance(item, dict)] if isinstance(value, list) else []
