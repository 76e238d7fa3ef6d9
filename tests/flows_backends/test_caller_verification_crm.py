"""Caller verification against the real demo CRM on loopback: PINs and account digits checked against salted
hashes, one-time codes texted, and the secret in no URL, journal, log line or error."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from flows.backends import BackendBadRequest, BackendConfig, HttpBackendGateway
from ivr.demo_crm import DEFAULT_DATA, demo_crm_state, start_demo_crm

if TYPE_CHECKING:
    from conftest import CrmHandle

PIN, ACCOUNT_DIGITS = "2580", "3391"  # C1001's demo secrets (ivr/demo_crm.py)


async def journal(crm: CrmHandle) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{crm.url}/_stats") as resp:
        return json.dumps(await resp.json())


def test_the_seed_holds_no_secret_in_clear() -> None:
    data = json.loads(DEFAULT_DATA.read_text(encoding="utf-8"))
    for cust in data["customers"]:
        assert set(cust["verification"]) == {"pin", "account_digits"}
        for stored in cust["verification"].values():
            assert stored.startswith("pbkdf2_sha256$") and not re.fullmatch(r"\d{4,8}", stored)


async def test_pin_and_account_digits_are_checked_and_never_kept(
    make_gateway: Any, crm: CrmHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = make_gateway()

    async def check(method: str, secret: str) -> bool:
        params = {"customer_id": "C1001", "method": method, "secret": secret}
        result = await gw.call("crm", "verify_caller", params, call_sid="CA-ver")
        return bool(result["verified"])

    assert await check("pin", PIN) is True
    assert await check("pin", "1111") is False
    assert await check("account_digits", ACCOUNT_DIGITS) is True
    assert await check("account_digits", PIN) is False
    with pytest.raises(BackendBadRequest) as bad:
        await check("pin", "12ab")
    assert "12ab" not in str(bad.value)

    seen = await journal(crm) + caplog.text
    assert "[withheld]" in seen
    for secret in (PIN, "1111", ACCOUNT_DIGITS, "12ab"):
        assert secret not in seen


async def test_a_texted_code_verifies_once() -> None:
    runner, url = await start_demo_crm("127.0.0.1", 0)
    gw = HttpBackendGateway({"crm": BackendConfig(base_url=url)})
    try:
        assert await gw.call("crm", "send_code", {"customer_id": "C1001"}, call_sid="CA-sms") == {"sent": True}
        sms = demo_crm_state(runner).outbox[-1]
        assert sms["to"] == "+14155550100"
        code = re.search(r"\d{6}", sms["text"]).group(0)  # type: ignore[union-attr]
        params = {"customer_id": "C1001", "method": "sms_code", "secret": code}
        assert (await gw.call("crm", "verify_caller", params, call_sid="CA-sms"))["verified"] is True
        # one try per code: the same code again is refused
        assert (await gw.call("crm", "verify_caller", params, call_sid="CA-sms"))["verified"] is False
        assert code not in json.dumps(list(demo_crm_state(runner).journal))
    finally:
        await gw.close()
        await runner.cleanup()
