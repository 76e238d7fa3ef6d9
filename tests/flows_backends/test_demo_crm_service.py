"""The demo CRM as a real HTTP service: data, identity matching, idempotent top-ups, live knobs, CLI."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from flows.identity import match_key

if TYPE_CHECKING:
    from conftest import CrmHandle

ROOT = Path(__file__).resolve().parents[2]


async def _get(url: str) -> tuple[int, str, object]:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        await resp.read()
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        return resp.status, resp.content_type, body


async def test_customer_found_by_any_format_of_the_phone_number(crm: CrmHandle) -> None:
    for phone in ("(415) 555-0100", "+14155550100", "415.555.0100"):
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{crm.url}/customers/by-phone", params={"phone": phone}) as resp:
                assert resp.status == 200
                body = await resp.json()
        assert body["customer_id"] == "C1001"
        assert body["phone"] == "+14155550100"
        assert match_key(body["phone"]) == match_key(phone)


async def test_unknown_and_invalid_numbers_are_told_apart(crm: CrmHandle) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{crm.url}/customers/by-phone", params={"phone": "+14155550199"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "not_found"
        async with s.get(f"{crm.url}/customers/by-phone", params={"phone": "anonymous"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_phone"


async def test_seed_data_covers_the_demo_scenarios(crm: CrmHandle) -> None:
    phones = ["+14155550100", "+14155550101", "+12125550102", "+442079460958", "+13125550103"]
    customers = []
    async with aiohttp.ClientSession() as s:
        for phone in phones:
            async with s.get(f"{crm.url}/customers/by-phone", params={"phone": phone}) as resp:
                assert resp.status == 200
                customers.append(await resp.json())
    assert any(c["lifetime_value"] > 5000 and c["tier"] == "vip" for c in customers)
    assert any(any(o["status"] == "in_transit" for o in c["orders"]) for c in customers)
    assert any(c["orders"] and all(o["status"] == "delivered" for o in c["orders"]) for c in customers)
    assert any(not t["resolved"] for c in customers for t in c["tickets"])


async def test_replayed_top_up_is_applied_once(crm: CrmHandle) -> None:
    url = f"{crm.url}/customers/C1002/top-up"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{crm.url}/customers/C1002/balance") as resp:
            before = (await resp.json())["balance"]
        replies = []
        for _ in range(2):
            async with s.post(url, json={"amount": 20}, headers={"Idempotency-Key": "k-1"}) as resp:
                replies.append(await resp.json())
        async with s.post(url, json={"amount": 20}) as resp:
            assert resp.status == 400  # no key, no top-up
        async with s.get(f"{crm.url}/customers/C1002/balance") as resp:
            after = (await resp.json())["balance"]
    assert replies[0] == replies[1] == {"ok": True, "new_balance": round(before + 20, 2)}
    assert after == round(before + 20, 2)


async def test_live_knobs_fail_and_garbage_then_recover(crm: CrmHandle) -> None:
    order = f"{crm.url}/orders/A1001"
    await crm.control(fail=True)
    assert (await _get(order))[0] == 503
    await crm.control(fail=False, garbage=True)
    status, ctype, body = await _get(order)
    assert status == 200 and ctype == "text/html" and body is None
    await crm.control(garbage=None)
    status, ctype, body = await _get(order)
    assert status == 200 and body["status"] == "in_transit"
    # the control routes are never broken and never counted
    assert await crm.requests("GET /orders/{order_id}") == 3


async def test_bad_control_request_is_refused_and_changes_nothing(crm: CrmHandle) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{crm.url}/_control", json={"fail": 3}) as resp:
            assert resp.status == 400
            assert "fail" in (await resp.json())["message"]
        async with s.post(f"{crm.url}/_control", json={"garbage": "gibberish"}) as resp:
            assert resp.status == 400
    assert (await _get(f"{crm.url}/orders/A1001"))[0] == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_cli_starts_with_knobs_that_can_be_changed_live() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ivr.demo_crm",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--fail-rate",
        "1",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        url = f"http://127.0.0.1:{port}"
        assert url in line.decode()
        assert (await _get(f"{url}/orders/A1001"))[0] == 503
        async with aiohttp.ClientSession() as s, s.post(f"{url}/_control", json={"fail": 0}) as resp:
            assert resp.status == 200
        assert (await _get(f"{url}/orders/A1001"))[0] == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
