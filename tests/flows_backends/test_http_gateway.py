"""HttpBackendGateway against the real demo CRM on loopback: what a flow (and so a caller) gets
when the backend is fine, slow, failing or talking nonsense."""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from flows.backends import BackendBadRequest, BackendConfig, BackendMetrics, HttpBackendGateway
from flows.gateway import BackendBadResponse, BackendBadStatus, BackendTimeout, BackendUnavailable
from flows.identity import customer_from_result, match_key

if TYPE_CHECKING:
    from conftest import CrmHandle, FakeClock

BY_PHONE = "GET /customers/by-phone"


async def test_caller_id_in_any_format_finds_the_customer(make_gateway: Any) -> None:
    gw = make_gateway()
    result = await gw.call("crm", "customer_by_phone", {"phone": "(415) 555-0100"}, call_sid="CA-look")
    assert result["found"] is True and result["name"] == "Maria Garcia"
    assert {o["status"] for o in result["orders"]} == {"in_transit", "delivered"}
    assert set(result["tickets"][0]) >= {"date", "type", "resolved"}

    customer = customer_from_result(result, phone="(415) 555-0100")
    assert customer is not None
    assert customer.customer_id == "C1001" and customer.phone_e164 == "+14155550100"
    assert customer.match_key == match_key("+1 415-555-0100")
    assert customer.lifetime_value > 5000 and customer.tier == "vip"
    assert customer.orders[0]["order_id"] == "A1001"


async def test_unknown_or_withheld_caller_is_not_found_not_an_error(make_gateway: Any, crm: CrmHandle) -> None:
    gw = make_gateway()
    unknown = await gw.call("crm", "customer_by_phone", {"phone": "+1 415 555 0199"}, call_sid="CA-u")
    assert unknown == {"found": False}
    assert customer_from_result(unknown) is None
    sent = await crm.requests(BY_PHONE)
    assert await gw.call("crm", "customer_by_phone", {"phone": "anonymous"}, call_sid="CA-a") == {"found": False}
    assert await crm.requests(BY_PHONE) == sent  # nothing to look up, nothing sent
    assert gw.metrics.count("crm", "customer_by_phone", "not_found") == 2
    assert gw.metrics.count("crm", "customer_by_phone", "timeout") == 0


async def test_order_balance_and_account_actions(make_gateway: Any) -> None:
    gw = make_gateway()
    order = await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-o")
    assert order["status"] == "in_transit" and order["item"] == "espresso machine" and order["eta"]
    assert await gw.call("crm", "order_status", {"order_id": "Z9999"}, call_sid="CA-o") == {"found": False}

    bal = await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-b")
    assert bal == {"balance": 182.4, "currency": "USD"}
    blocked = await gw.call("crm", "block_card", {"customer_id": "C1001", "card_last4": "4417"}, call_sid="CA-b")
    assert blocked["blocked"] is True
    wrong = await gw.call("crm", "block_card", {"customer_id": "C1001", "card_last4": "0000"}, call_sid="CA-b")
    assert wrong["blocked"] is False
    plan = await gw.call("crm", "payment_arrangement", {"customer_id": "C1003"}, call_sid="CA-b")
    assert plan["arranged"] is True and plan["next_date"]


async def test_top_up_is_not_applied_twice_when_a_flow_repeats_it(make_gateway: Any) -> None:
    gw = make_gateway()
    start = (await gw.call("crm", "balance", {"customer_id": "C1002"}, call_sid="CA-t"))["balance"]
    first = await gw.call("crm", "top_up", {"customer_id": "C1002", "amount": 10}, call_sid="CA-t")
    again = await gw.call("crm", "top_up", {"customer_id": "C1002", "amount": 10}, call_sid="CA-t")
    assert first == again == {"ok": True, "new_balance": round(start + 10, 2)}
    other_call = await gw.call("crm", "top_up", {"customer_id": "C1002", "amount": 10}, call_sid="CA-t2")
    assert other_call["new_balance"] == round(start + 20, 2)


async def test_slow_backend_times_out_within_the_budget(make_gateway: Any, crm: CrmHandle) -> None:
    await crm.control(delay_ms=3000)
    gw = make_gateway(timeout_s=0.3, retries=2)
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await gw.call("crm", "customer_by_phone", {"phone": "+14155550100"}, call_sid="CA-slow")
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.4, elapsed


async def test_budget_covers_all_retries_together(make_gateway: Any, crm: CrmHandle) -> None:
    # each answer takes 150 ms and is a 503: five retries would take 900 ms, the budget is 400 ms
    await crm.control(delay_ms=150, fail=True)
    gw = make_gateway(timeout_s=0.4, retries=5, backoff_s=0.01)
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-budget")
    assert time.monotonic() - started < 0.5
    assert await crm.requests("GET /orders/{order_id}") == 3


async def test_idempotent_reads_are_retried_writes_are_not(make_gateway: Any, crm: CrmHandle) -> None:
    await crm.control(fail=True)
    gw = make_gateway(retries=2)
    with pytest.raises(BackendBadStatus) as err:
        await gw.call("crm", "customer_by_phone", {"phone": "+14155550100"}, call_sid="CA-r")
    assert err.value.status == 503
    assert await crm.requests(BY_PHONE) == 3
    assert gw.metrics.attempts("crm", "customer_by_phone") == 3

    for op, params, route in [
        ("block_card", {"customer_id": "C1001", "card_last4": "4417"}, "POST /customers/{customer_id}/cards/block"),
        ("payment_arrangement", {"customer_id": "C1001"}, "POST /customers/{customer_id}/payment-arrangement"),
        ("top_up", {"customer_id": "C1001", "amount": 5}, "POST /customers/{customer_id}/top-up"),
    ]:
        with pytest.raises(BackendBadStatus):
            await gw.call("crm", op, params, call_sid="CA-w")
        assert await crm.requests(route) == 1, op


async def test_no_retry_when_the_backoff_would_overrun_the_budget(make_gateway: Any, crm: CrmHandle) -> None:
    await crm.control(fail=True)
    gw = make_gateway(timeout_s=0.3, retries=3, backoff_s=0.5)
    started = time.monotonic()
    with pytest.raises(BackendBadStatus):
        await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-bo")
    assert time.monotonic() - started < 0.3  # fails at once instead of sleeping past the budget
    assert await crm.requests("GET /customers/{customer_id}/balance") == 1


async def test_circuit_opens_fails_fast_and_recovers_after_reset(
    make_gateway: Any, crm: CrmHandle, clock: FakeClock
) -> None:
    await crm.control(fail=True)
    gw = make_gateway(retries=0, breaker_failures=3, breaker_reset_s=30)
    for _ in range(3):
        with pytest.raises(BackendBadStatus):
            await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-cb")
    assert gw.breaker_state("crm") == "open"
    await crm.control(fail=False)  # the backend is back, but the breaker does not know yet
    for op, params in [("balance", {"customer_id": "C1001"}), ("customer_by_phone", {"phone": "+14155550100"})]:
        with pytest.raises(BackendUnavailable):
            await gw.call("crm", op, params, call_sid="CA-cb")
    assert await crm.requests() == 3  # open circuit: nothing reached the CRM

    clock.advance(29.9)
    with pytest.raises(BackendUnavailable):
        await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-cb")
    clock.advance(0.2)
    assert (await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-cb"))["currency"] == "USD"
    assert gw.breaker_state("crm") == "closed"
    await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-cb")
    assert await crm.requests() == 5
    assert gw.metrics.count("crm", "balance", "unavailable") == 2


async def test_failed_trial_reopens_the_circuit(make_gateway: Any, crm: CrmHandle, clock: FakeClock) -> None:
    await crm.control(fail=True)
    gw = make_gateway(retries=2, breaker_failures=2, breaker_reset_s=10)
    for _ in range(2):
        with pytest.raises(BackendBadStatus):
            await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-tr")
    assert await crm.requests() == 6
    clock.advance(10)
    with pytest.raises(BackendBadStatus):
        await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-tr")
    assert await crm.requests() == 7  # exactly one trial request, no retries
    with pytest.raises(BackendUnavailable):
        await gw.call("crm", "order_status", {"order_id": "A1001"}, call_sid="CA-tr")
    assert await crm.requests() == 7


@pytest.mark.parametrize("mode", ["html", "text", "truncated", "wrong_shape", "missing_fields"])
async def test_garbage_answers_are_bad_responses_never_crashes(make_gateway: Any, crm: CrmHandle, mode: str) -> None:
    await crm.control(garbage=mode)
    gw = make_gateway()
    with pytest.raises(BackendBadResponse):
        await gw.call("crm", "customer_by_phone", {"phone": "+14155550100"}, call_sid="CA-g")
    with pytest.raises(BackendBadResponse):
        await gw.call("crm", "top_up", {"customer_id": "C1001", "amount": 1}, call_sid="CA-g")
    assert gw.metrics.count("crm", "customer_by_phone", "bad_response") == 1


async def test_wrong_types_in_a_json_answer_are_bad_responses() -> None:
    from aiohttp import web

    async def lying(request: web.Request) -> web.Response:  # a "CRM" that says "true" for a bool
        return web.json_response({"blocked": "true"})

    app = web.Application()
    app.router.add_post("/customers/{customer_id}/cards/block", lying)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    gw = HttpBackendGateway({"crm": BackendConfig(base_url=f"http://{host}:{port}")})
    try:
        with pytest.raises(BackendBadResponse):
            await gw.call("crm", "block_card", {"customer_id": "C1", "card_last4": "1234"}, call_sid="CA-l")
    finally:
        await gw.close()
        await runner.cleanup()


async def test_errors_are_logged_with_call_sid_and_counted(
    make_gateway: Any, crm: CrmHandle, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = BackendMetrics(registry)
    gw = make_gateway(timeout_s=0.2, metrics=metrics)
    await crm.control(delay_ms=1000)
    caplog.set_level(logging.INFO, logger="ivr.backends")
    with pytest.raises(BackendTimeout):
        await gw.call("crm", "customer_by_phone", {"phone": "+14155550100"}, call_sid="CA-log-1")
    await crm.control(delay_ms=0, fail=True)
    with pytest.raises(BackendBadStatus):
        await gw.call("crm", "block_card", {"customer_id": "C1001", "card_last4": "4417"}, call_sid="CA-log-2")

    errors = [r for r in caplog.records if r.name == "ivr.backends" and r.levelno >= logging.ERROR]
    assert [(r.call_sid, r.kind, r.operation) for r in errors] == [
        ("CA-log-1", "timeout", "customer_by_phone"),
        ("CA-log-2", "bad_status", "block_card"),
    ]
    assert all("CA-log-" in r.getMessage() and r.backend == "crm" for r in errors)
    assert "4417" not in caplog.text  # card digits never reach the logs

    assert metrics.count("crm", "customer_by_phone") == metrics.count("crm", "customer_by_phone", "timeout") == 1
    assert metrics.count("crm", "block_card", "bad_status") == 1
    exported = generate_latest(registry).decode()
    assert 'ivr_backend_errors_total{backend="crm",kind="timeout",operation="customer_by_phone"} 1.0' in exported
    assert 'ivr_backend_requests_total{backend="crm",kind="bad_status",operation="block_card"} 1.0' in exported
    assert 'ivr_backend_latency_seconds_count{backend="crm",operation="customer_by_phone"} 1.0' in exported
    assert 'ivr_backend_circuit_open{backend="crm"} 0.0' in exported


async def test_unreachable_backend_is_unavailable_after_retries(make_gateway: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gw = make_gateway(base_url=f"http://127.0.0.1:{port}", retries=2)
    with pytest.raises(BackendUnavailable, match="connection failed"):
        await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-down")
    assert gw.metrics.attempts("crm", "balance") == 3


async def test_unconfigured_backend_is_unavailable_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    gw = HttpBackendGateway({})
    with pytest.raises(BackendUnavailable, match="not configured"):
        await gw.call("crm", "balance", {"customer_id": "C1"}, call_sid="CA-nc")
    assert any(getattr(r, "call_sid", None) == "CA-nc" for r in caplog.records)
    await gw.close()


async def test_bad_params_are_refused_before_sending_without_echoing_digits(make_gateway: Any, crm: CrmHandle) -> None:
    gw = make_gateway()
    with pytest.raises(BackendBadRequest, match="card_last4") as err:
        await gw.call("crm", "block_card", {"customer_id": "C1001", "card_last4": "44170"}, call_sid="CA-p")
    assert isinstance(err.value, ValueError) and "44170" not in str(err.value)
    with pytest.raises(BackendBadRequest, match="amount"):
        await gw.call("crm", "top_up", {"customer_id": "C1001", "amount": -5}, call_sid="CA-p")
    with pytest.raises(BackendBadRequest, match="order_id"):
        await gw.call("crm", "order_status", {"order_id": "  "}, call_sid="CA-p")  # an empty slot
    assert await crm.requests() == 0
    assert gw.metrics.count("crm", "top_up", "bad_request") == 1


async def test_hung_up_trial_call_does_not_jam_the_circuit(make_gateway: Any, crm: CrmHandle, clock: FakeClock) -> None:
    import asyncio

    await crm.control(fail=True)
    gw = make_gateway(retries=0, breaker_failures=1, breaker_reset_s=5)
    with pytest.raises(BackendBadStatus):
        await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-h")
    clock.advance(5)
    await crm.control(fail=False, delay_ms=2000)
    trial = asyncio.create_task(gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-h"))
    await asyncio.sleep(0.1)
    trial.cancel()  # the caller hung up while the trial request was in flight
    with pytest.raises(asyncio.CancelledError):
        await trial
    await crm.control(delay_ms=0)
    assert (await gw.call("crm", "balance", {"customer_id": "C1001"}, call_sid="CA-h2"))["currency"] == "USD"
