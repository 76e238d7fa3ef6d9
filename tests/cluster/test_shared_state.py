"""Live state a fleet keeps in Redis, as two nodes see it. An escalated call's context: the call returns from the
agent on another node and resumes with everything known (customer, slots, turns), once; erasure by phone
removes it everywhere. A desk WebSocket ticket: issued by one node, redeemed once on any. A callback link's
request limit: one budget whichever node each request reaches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from flows.context import CallContext, Customer, Turn
from ivr.fleet import CHANNEL, CONTEXT_JSON, Fleet

REDIS_URL = "redis://127.0.0.1:6379/8"


@pytest.fixture
async def fleets() -> AsyncIterator[tuple[Fleet, Fleet]]:
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    a, b = Fleet.connect("node-a", REDIS_URL), Fleet.connect("node-b", REDIS_URL)
    yield a, b
    await a.close()
    await b.close()


def escalated_call(call_sid: str, phone: str) -> CallContext:
    ctx = CallContext(call_sid=call_sid, caller=phone, customer=Customer("C-17", name="Maria", phone_e164=phone))
    ctx.slots["order_id"] = "48213"
    ctx.turns.append(Turn(0, "voice", "my parcel never came", intent="delivery_problem", confidence=0.93))
    ctx.escalated = True
    return ctx


async def test_a_call_back_from_an_agent_resumes_on_another_node_once(fleets: tuple[Fleet, Fleet]) -> None:
    a, b = fleets
    ctx = escalated_call("CA1", "+14155550123")
    await a.keep_context("CA1", CONTEXT_JSON.dump_json(ctx), ttl_s=60)

    raw = await b.take_context("CA1")

    assert raw is not None and CONTEXT_JSON.validate_json(raw) == ctx
    assert await b.take_context("CA1") is None and await a.take_context("CA1") is None


async def test_erasure_by_phone_removes_kept_contexts_on_every_node(fleets: tuple[Fleet, Fleet]) -> None:
    a, b = fleets
    await a.keep_context("CA1", CONTEXT_JSON.dump_json(escalated_call("CA1", "+14155550123")), ttl_s=60)
    await a.keep_context("CA2", CONTEXT_JSON.dump_json(escalated_call("CA2", "+14155550999")), ttl_s=60)

    erased = await b.erase_contexts(lambda raw: CONTEXT_JSON.validate_json(raw).caller == "+14155550123")

    assert erased == 1
    assert await a.take_context("CA1") is None
    assert await a.take_context("CA2") is not None


async def test_kept_contexts_expire(fleets: tuple[Fleet, Fleet]) -> None:
    a, _ = fleets
    await a.keep_context("CA1", CONTEXT_JSON.dump_json(escalated_call("CA1", "+14155550123")), ttl_s=60)
    ttl_ms = await a.redis.pttl("ivr:context:CA1")
    assert 0 < ttl_ms <= 60_000


async def test_a_desk_ticket_from_one_node_opens_the_websocket_on_another_once(fleets: tuple[Fleet, Fleet]) -> None:
    """Behind the balancer the page's ticket request and its WebSocket may reach different nodes."""
    a, b = fleets
    ticket = await a.desk_tickets(30).issue("alice")

    assert await b.desk_tickets(30).redeem(ticket) == (True, "alice")
    assert await a.desk_tickets(30).redeem(ticket) == (False, None)
    assert await b.desk_tickets(30).redeem("forged") == (False, None)


async def test_a_links_request_limit_holds_across_nodes(fleets: tuple[Fleet, Fleet]) -> None:
    """A client alternating between two nodes gets no more than the one limit (20 a minute by default)."""
    a, b = fleets
    counts = [await (a if i % 2 else b).request_counter("callback-link").hit("tok-1", 60.0) for i in range(21)]

    assert counts == list(range(1, 22))  # the 21st request is over a 20-a-minute limit, whichever node took it
    assert await a.request_counter("callback-link").hit("tok-2", 60.0) == 1  # each link has its own budget
    assert 0 < await a.redis.ttl("ivr:rate:callback-link:tok-1") <= 61  # the counter expires with its window


async def test_a_malformed_fleet_event_is_counted_and_the_next_one_still_handled(fleets: tuple[Fleet, Fleet]) -> None:
    a, b = fleets
    errors: list[int] = []
    changed = asyncio.Event()

    async def queue_changed() -> None:
        changed.set()

    b.on_error, b.on_queue_changed = (lambda: errors.append(1)), queue_changed
    await b.start()
    await a.redis.publish(CHANNEL, "not json")
    await a.queue_changed()

    await asyncio.wait_for(changed.wait(), timeout=5)
    assert errors == [1]
