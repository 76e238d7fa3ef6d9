"""Agent desk REST + WebSocket: queues by skill and priority, a logged-in agent's accept transfers the call once."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from ivr.agent_desk import AgentDesk
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    add_agent,
    agent_alice,
    auth,
    handoff_payload,
    login,
    start_call,
)
from tests.helpers.twilio_recorder import TwilioRecorder


async def escalate(
    desk: AgentDesk,
    storage: AsyncStorage,
    call_sid: str,
    *,
    queue: str = "billing",
    priority: int = 50,
    reason: str = "caller asked for a human",
    **payload: object,
) -> int:
    await start_call(storage, call_sid)
    return await desk.enqueue(
        call_sid,
        trigger="asked_for_human",
        reason=reason,
        queue=queue,
        priority=priority,
        payload=handoff_payload(call_sid, queue=queue, priority=priority, reason=reason, **payload),
    )


async def test_every_agent_endpoint_needs_the_token(client: TestClient, desk: AgentDesk, storage: AsyncStorage):
    eid = await escalate(desk, storage, "CA" + "a" * 32)
    assert (await client.get("/api/agent/queue")).status == 401
    assert (await client.get(f"/api/agent/escalations/{eid}")).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        await client.post(f"/api/agent/escalations/{eid}/accept", json={"agent": "eve"}, headers=wrong)
    ).status == 401
    try:
        await client.ws_connect("/api/agent/ws")
        raise AssertionError("websocket opened without a token")
    except WSServerHandshakeError as exc:
        assert exc.status == 401
    # The page itself loads without a token (it asks for one).
    page = await client.get("/agent")
    assert page.status == 200 and "Agent desk" in await page.text()
    assert (await client.get("/agent/agent.js")).status == 200
    assert (await desk.storage.get_escalation(eid))["status"] == "waiting"


async def test_queue_per_skill_highest_priority_then_oldest_first(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, clock
):
    low = await escalate(desk, storage, "CA" + "1" * 32, priority=20, reason="low priority, oldest")
    clock.advance(seconds=30)
    vip_old = await escalate(desk, storage, "CA" + "2" * 32, priority=90, reason="vip first")
    clock.advance(seconds=30)
    vip_new = await escalate(desk, storage, "CA" + "3" * 32, priority=90, reason="vip second")
    other = await escalate(desk, storage, "CA" + "4" * 32, queue="tech", priority=99, reason="tech queue")
    clock.advance(seconds=15)

    resp = await client.get("/api/agent/queue", params={"skill": "billing"}, headers=auth())
    assert resp.status == 200
    snap = await resp.json()
    assert snap["type"] == "queue"
    assert [i["id"] for i in snap["items"]] == [vip_old, vip_new, low]
    assert other not in [i["id"] for i in snap["items"]]
    first = snap["items"][0]
    assert first["reason"] == "vip first" and first["customer_tier"] == "gold"
    assert first["lifetime_value"] == 7350.0 and first["intent_guess"] == "refund_request"
    assert first["last_3_messages"][-1] == "I want a refund now"
    assert first["waiting_s"] == 45.0

    everything = await (await client.get("/api/agent/queue", headers=auth())).json()
    assert everything["items"][0]["id"] == other and everything["queues"] == {"tech": 1, "billing": 3}


async def test_accept_transfers_the_live_call_to_the_accepting_agents_own_number(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    call_sid = "CA" + "b" * 32
    eid = await escalate(desk, storage, call_sid)
    alice = await agent_alice(client, storage)

    resp = await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "transferred" and body["agent"] == "alice"

    [req] = twilio_recorder.find(f"/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json")
    assert req.method == "POST"
    dial = ET.fromstring(req.form["Twiml"]).find("Dial")
    assert dial is not None and dial.find("Number").text == AGENT_NUMBER

    queue = await (await client.get("/api/agent/queue", headers=auth())).json()
    assert queue["items"] == []
    detail = await (await client.get(f"/api/agent/escalations/{eid}", headers=auth())).json()
    assert detail["status"] == "transferred" and detail["payload"]["customer_id"] == "cust-42"
    actions = [(a["actor"], a["action"], a["subject"]) for a in await storage.list_audit()]
    assert ("alice", "accept_escalation", f"escalation:{eid}") in actions
    assert ("alice", "transfer", f"escalation:{eid}") in actions


async def test_second_agent_gets_409_and_the_call_is_transferred_once(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    eid = await escalate(desk, storage, "CA" + "c" * 32)
    for name, reach in (("alice", AGENT_NUMBER), ("bob", "sip:bob@pbx.example.test"), ("carol", "client:carol")):
        await add_agent(storage, name, reach)
    alice, bob, carol = [await login(client, name) for name in ("alice", "bob", "carol")]
    first, second = await asyncio.gather(
        client.post(f"/api/agent/escalations/{eid}/accept", headers=alice),
        client.post(f"/api/agent/escalations/{eid}/accept", headers=bob),
    )
    assert sorted([first.status, second.status]) == [200, 409]
    late = await client.post(f"/api/agent/escalations/{eid}/accept", headers=carol)
    assert late.status == 409
    assert len(twilio_recorder.find(".json")) == 1
    audit = await storage.list_audit()
    assert sum(a["action"] == "accept_escalation" for a in audit) == 1
    assert {a["actor"] for a in audit if a["action"] == "accept_conflict"} >= {"carol"}


async def test_accept_needs_a_logged_in_agent_and_an_existing_escalation(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage
):
    eid = await escalate(desk, storage, "CA" + "f" * 32)
    # The admin API token is for the API: it is nobody, so it cannot take a caller; a typed name counts for nothing.
    refused = await client.post(f"/api/agent/escalations/{eid}/accept", json={"agent": "alice"}, headers=auth())
    assert refused.status == 403
    alice = await agent_alice(client, storage)
    assert (await client.post("/api/agent/escalations/999/accept", headers=alice)).status == 404
    assert (await client.post("/api/agent/escalations/x/accept", headers=alice)).status == 400
    wrong = await client.post("/api/agent/login", json={"name": "alice", "password": "not her password"})
    assert wrong.status == 401
    assert [a["action"] for a in await storage.list_audit()].count("login_failed") == 1


async def test_failed_transfer_returns_502_and_puts_the_caller_back_in_the_queue(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    eid = await escalate(desk, storage, "CA" + "d" * 32)
    alice = await agent_alice(client, storage)
    twilio_recorder.fail_next(500, times=desk.twilio.retries + 1)
    resp = await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)
    assert resp.status == 502
    body = await resp.json()
    # In words, with a retry: never a raw exception.
    assert body["retry"] is True and "back in the queue" in body["error"] and "Error" not in body["error"]
    queue = await (await client.get("/api/agent/queue", headers=auth())).json()
    assert [i["id"] for i in queue["items"]] == [eid]
    assert any(a["action"] == "transfer_failed" for a in await storage.list_audit())


async def test_websocket_pushes_the_queue_when_it_changes(client: TestClient, desk: AgentDesk, storage: AsyncStorage):
    ticket = (await (await client.post("/api/agent/ws-ticket", headers=auth())).json())["ticket"]
    ws = await client.ws_connect(f"/api/agent/ws?ticket={ticket}&skill=billing")
    initial = await ws.receive_json(timeout=5)
    assert initial["type"] == "queue" and initial["items"] == []

    eid = await escalate(desk, storage, "CA" + "e" * 32, reason="wants a supervisor")
    pushed = await ws.receive_json(timeout=5)
    assert [(i["id"], i["reason"]) for i in pushed["items"]] == [(eid, "wants a supervisor")]

    await client.post(f"/api/agent/escalations/{eid}/accept", headers=await agent_alice(client, storage))
    for _ in range(8):  # accepted, then transferred: the item leaves the queue
        snap = await ws.receive_json(timeout=5)
        if not snap["items"]:
            break
    assert snap["items"] == []
    await ws.close()
