"""The desk's credentials stay out of URLs: header-only bearer token, single-use short-lived WebSocket tickets."""

from __future__ import annotations

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from tests.agent_desk.desk_fixtures import API_TOKEN, FakeClock, auth


async def ticket(client: TestClient) -> str:
    resp = await client.post("/api/agent/ws-ticket", headers=auth())
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["expires_in"] == 30 and len(body["ticket"]) >= 32
    return body["ticket"]


async def refused_ws(client: TestClient, path: str) -> int:
    with pytest.raises(WSServerHandshakeError) as exc:
        await client.ws_connect(path)
    return exc.value.status


async def test_the_token_in_a_query_string_is_refused_everywhere(client: TestClient):
    assert (await client.get(f"/api/agent/queue?token={API_TOKEN}")).status == 401
    assert (await client.post(f"/api/agent/ws-ticket?token={API_TOKEN}")).status == 401
    accepted = await client.post(f"/api/agent/escalations/1/accept?token={API_TOKEN}", json={"agent": "eve"})
    assert accepted.status == 401
    assert await refused_ws(client, f"/api/agent/ws?token={API_TOKEN}") == 401
    # The header still works, for REST and for a WebSocket client that can set one.
    assert (await client.get("/api/agent/queue", headers=auth())).status == 200
    ws = await client.ws_connect("/api/agent/ws", headers=auth())
    assert (await ws.receive_json(timeout=5))["type"] == "queue"
    await ws.close()


async def test_a_ticket_opens_one_websocket_once(client: TestClient):
    assert (await client.post("/api/agent/ws-ticket")).status == 401  # a ticket needs the bearer token
    first = await ticket(client)
    ws = await client.ws_connect(f"/api/agent/ws?ticket={first}&skill=billing")
    snap = await ws.receive_json(timeout=5)
    assert snap["type"] == "queue" and snap["skill"] == "billing"
    await ws.close()
    assert await refused_ws(client, f"/api/agent/ws?ticket={first}") == 401  # replayed
    assert await refused_ws(client, "/api/agent/ws?ticket=made-up") == 401
    assert await refused_ws(client, "/api/agent/ws") == 401


async def test_a_ticket_expires_after_30_seconds(client: TestClient, clock: FakeClock):
    late = await ticket(client)
    clock.advance(seconds=31)
    assert await refused_ws(client, f"/api/agent/ws?ticket={late}") == 401
    fresh = await ticket(client)
    clock.advance(seconds=29)
    ws = await client.ws_connect(f"/api/agent/ws?ticket={fresh}")
    assert (await ws.receive_json(timeout=5))["type"] == "queue"
    await ws.close()
