"""Agents as identities, transfers that fail safely, the warm whisper and wrap-up, through the recording Twilio
server and signed webhooks posted the way Twilio posts them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestClient

from flows.backends import BackendConfig, HttpBackendGateway
from ivr.agent_desk import REQUEUE_LINE, AgentDesk
from ivr.demo_crm import start_demo_crm
from ivr.storage import AsyncStorage
from telephony.twiml import is_valid_stream_token
from tests.agent_desk.desk_fixtures import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    TWILIO_AUTH_TOKEN,
    add_agent,
    handoff_payload,
    login,
    start_call,
    twilio_posts,
)
from tests.helpers.twilio_recorder import TwilioRecorder

BOB_SIP = "sip:bob@pbx.example.test"


async def escalate(desk: AgentDesk, storage: AsyncStorage, call_sid: str, **payload: Any) -> int:
    await start_call(storage, call_sid)
    queue = str(payload.pop("queue", "billing"))
    priority = int(payload.pop("priority", 50))
    eid = await desk.enqueue(
        call_sid,
        trigger="frustration",
        reason=str(payload.get("reason", "caller frustrated after two failed lookups")),
        queue=queue,
        priority=priority,
        payload=handoff_payload(call_sid, queue=queue, priority=priority, **payload),
    )
    assert eid is not None
    return eid


def dial_of(recorder: TwilioRecorder, call_sid: str) -> ET.Element:
    [req] = recorder.find(f"/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json")
    dial = ET.fromstring(req.form["Twiml"]).find("Dial")
    assert dial is not None
    return dial


def leg_of(dial: ET.Element) -> str:
    action = dial.get("action") or ""
    return action.split("?", 1)[1]  # "leg=N"


async def next_matching(ws: aiohttp.ClientWebSocketResponse, want: Any, tries: int = 12) -> dict[str, Any]:
    for _ in range(tries):
        msg = await ws.receive_json(timeout=5)
        if want(msg):
            return msg
    raise AssertionError("the page was never told")


async def page(client: TestClient, headers: dict[str, str]) -> aiohttp.ClientWebSocketResponse:
    ticket = (await (await client.post("/api/agent/ws-ticket", headers=headers)).json())["ticket"]
    ws = await client.ws_connect(f"/api/agent/ws?ticket={ticket}")
    await ws.receive_json(timeout=5)
    return ws


async def test_two_logged_in_agents_each_dial_their_own_reach(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    first, second = "CA" + "1" * 32, "CA" + "2" * 32
    e1, e2 = await escalate(desk, storage, first), await escalate(desk, storage, second)
    await add_agent(storage, "alice", AGENT_NUMBER)
    await add_agent(storage, "bob", BOB_SIP)
    alice, bob = await login(client, "alice"), await login(client, "bob")

    assert (await client.post(f"/api/agent/escalations/{e1}/accept", headers=alice)).status == 200
    assert (await client.post(f"/api/agent/escalations/{e2}/accept", headers=bob)).status == 200

    alice_dial, bob_dial = dial_of(twilio_recorder, first), dial_of(twilio_recorder, second)
    number, sip = alice_dial.find("Number"), bob_dial.find("Sip")
    assert number is not None and number.text == AGENT_NUMBER and alice_dial.find("Sip") is None
    assert sip is not None and sip.text == BOB_SIP and bob_dial.find("Number") is None
    for dial in (alice_dial, bob_dial):  # a dial that ends without a bridge is reported back, never dropped
        assert (dial.get("action") or "").startswith("https://ivr.example.test/twilio/desk/dial-status?leg=")
    audit = [(a["actor"], a["action"], a["subject"]) for a in await storage.list_audit()]
    assert ("alice", "accept_escalation", f"escalation:{e1}") in audit
    assert ("bob", "accept_escalation", f"escalation:{e2}") in audit
    # Busy agents are not offered another caller.
    e3 = await escalate(desk, storage, "CA" + "3" * 32)
    busy = await client.post(f"/api/agent/escalations/{e3}/accept", headers=alice)
    assert busy.status == 409 and "on a call" in (await busy.json())["error"]


async def test_no_answer_puts_the_caller_back_at_the_head_pauses_the_agent_and_tells_every_page(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    missed_sid = "CA" + "4" * 32
    missed = await escalate(desk, storage, missed_sid, priority=20, customer_name="Maria Garcia")
    urgent = await escalate(desk, storage, "CA" + "5" * 32, priority=90)
    await add_agent(storage, "alice", AGENT_NUMBER, display_name="Alice Ng")
    await add_agent(storage, "bob", BOB_SIP)
    alice, bob = await login(client, "alice"), await login(client, "bob")
    alice_page, bob_page = await page(client, alice), await page(client, bob)

    assert (await client.post(f"/api/agent/escalations/{missed}/accept", headers=alice)).status == 200
    leg = leg_of(dial_of(twilio_recorder, missed_sid))
    twiml = await twilio_posts(
        client,
        f"/twilio/desk/dial-status?{leg}",
        {"CallSid": missed_sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer", "From": "+14155550123"},
    )
    said = ET.fromstring(twiml)
    say, stream = said.find("Say"), said.find("Connect/Stream")
    assert say is not None and say.text == REQUEUE_LINE and stream is not None  # back to our hold, with a line
    back = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert stream.get("url") == "wss://ivr.example.test/twilio/media" and back["CallSid"] == missed_sid
    assert is_valid_stream_token(TWILIO_AUTH_TOKEN, missed_sid, back["token"])  # the new stream is let in

    for ws in (alice_page, bob_page):
        alert = await next_matching(ws, lambda m: m["type"] == "alert")
        assert alert["text"] == "Alice Ng did not answer: Maria Garcia (gold) is back at the head of the billing queue."
        snap = await next_matching(ws, lambda m: m["type"] == "queue" and m["items"] and m["items"][0]["requeued"])
        # At the head even though the other caller has a higher priority.
        assert [i["id"] for i in snap["items"]] == [missed, urgent]
        assert snap["items"][0]["missed_by"] == ["Alice Ng"]
    me = await (await client.get("/api/agent/me", headers=alice)).json()
    assert me["agent"]["status"] == "away" and "did not answer" in me["agent"]["status_reason"]
    paused = await client.post(f"/api/agent/escalations/{missed}/accept", headers=alice)
    assert paused.status == 409 and "away" in (await paused.json())["error"]
    audit = [(a["actor"], a["action"], a["details"].get("dial_status")) for a in await storage.list_audit()]
    assert ("alice", "transfer_missed", "no-answer") in audit
    # Bob is offered the caller next, and takes them.
    assert (await client.post(f"/api/agent/escalations/{missed}/accept", headers=bob)).status == 200
    assert len(twilio_recorder.find(f"Calls/{missed_sid}.json")) == 2
    await alice_page.close()
    await bob_page.close()


async def test_warm_transfer_whispers_the_brief_to_the_agent_before_the_bridge(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    call_sid = "CA" + "6" * 32
    eid = await escalate(desk, storage, call_sid, customer_name="Maria Garcia", intent_guess="refund_request")
    await add_agent(storage, "alice", AGENT_NUMBER)
    alice = await login(client, "alice")
    assert (await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)).status == 200

    number = dial_of(twilio_recorder, call_sid).find("Number")
    assert number is not None
    whisper_url = number.get("url") or ""
    assert whisper_url.startswith("https://ivr.example.test/twilio/desk/whisper?leg=")
    # While it rings, the agent's page has the caller's context.
    ringing = await (await client.get("/api/agent/me", headers=alice)).json()
    assert ringing["leg"]["status"] == "ringing" and ringing["call"]["customer_name"] == "Maria Garcia"

    # Unsigned, the webhook is refused: only Twilio may ask for the brief.
    assert (await client.post(whisper_url.removeprefix("https://ivr.example.test"), data={})).status == 403
    # The agent answers: Twilio fetches the whisper and plays it to the agent alone, then bridges.
    path = whisper_url.removeprefix("https://ivr.example.test")
    brief = ET.fromstring(await twilio_posts(client, path, {"CallSid": "CA" + "9" * 32, "AnsweredBy": "human"}))
    text = (brief.find("Say").text or "") if brief.find("Say") is not None else ""
    for words in ("Maria Garcia, gold tier", "Caller frustrated after two failed lookups", "refund request"):
        assert words in text
    connected = await (await client.get("/api/agent/me", headers=alice)).json()
    assert connected["leg"]["status"] == "answered" and connected["leg"]["answered_at"] is not None

    leg = (number.get("url") or "").split("?", 1)[1]
    done = await twilio_posts(
        client,
        f"/twilio/desk/dial-status?{leg}",
        {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "completed", "DialCallDuration": "95"},
    )
    assert ET.fromstring(done).find("Hangup") is not None
    after = await (await client.get("/api/agent/me", headers=alice)).json()
    assert after["agent"]["status"] == "wrap_up" and after["leg"]["talk_s"] == 95.0


@pytest_asyncio.fixture
async def crm() -> AsyncIterator[str]:
    runner, url = await start_demo_crm()
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_wrap_up_writes_the_disposition_to_the_demo_crm(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder, crm: str
):
    gateway = HttpBackendGateway({"crm": BackendConfig(base_url=crm)})
    desk.crm = gateway
    call_sid = "CA" + "7" * 32
    eid = await escalate(desk, storage, call_sid, customer_id="C1001", customer_name="Maria Garcia")
    await add_agent(storage, "alice", AGENT_NUMBER)
    alice = await login(client, "alice")
    accepted = await (await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)).json()
    leg_id = accepted["leg_id"]
    params = {
        "CallSid": call_sid,
        "CallStatus": "in-progress",
        "DialCallStatus": "completed",
        "DialCallDuration": "212",
    }
    await twilio_posts(client, f"/twilio/desk/dial-status?leg={leg_id}", params)

    # Not finished agents cannot invent a disposition; a known one is required.
    bad = await client.post(f"/api/agent/legs/{leg_id}/wrapup", json={"disposition": "meh"}, headers=alice)
    assert bad.status == 400 and "resolved" in (await bad.json())["error"]
    notes = "Refund of the late parcel approved; card 4111 1111 1111 1111 not needed."
    resp = await client.post(
        f"/api/agent/legs/{leg_id}/wrapup", json={"disposition": "resolved", "notes": notes}, headers=alice
    )
    assert resp.status == 200, await resp.text()
    stored = await resp.json()
    assert stored["disposition"] == "resolved" and stored["crm_status"] == "written"
    assert "4111 1111 1111 1111" not in stored["notes"]

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{crm}/customers/C1001/interactions") as got:
            [interaction] = await got.json()
    assert interaction["disposition"] == "resolved" and interaction["agent"] == "alice"
    assert interaction["call_sid"] == call_sid and interaction["handle_s"] == 212.0
    assert "Refund of the late parcel approved" in interaction["notes"] and "4111 1111" not in interaction["notes"]
    me = await (await client.get("/api/agent/me", headers=alice)).json()
    assert me["agent"]["status"] == "available" and me["leg"] is None
    await gateway.close()


async def test_a_caller_who_hangs_up_leaves_the_queue_at_once_as_abandoned(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage
):
    call_sid = "CA" + "8" * 32
    eid = await escalate(desk, storage, call_sid)
    await add_agent(storage, "alice", AGENT_NUMBER)
    ws = await page(client, await login(client, "alice"))
    desk.caller_left(call_sid)
    snap = await next_matching(ws, lambda m: m["type"] == "queue" and not m["items"])
    assert snap["queue_stats"] == {}
    record = await storage.get_escalation(eid)
    assert record is not None and record["status"] == "abandoned"
    await ws.close()


async def test_a_crm_that_is_down_keeps_the_wrap_up_and_the_retry_writes_it_once(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder, crm: str
):
    gateway = HttpBackendGateway({"crm": BackendConfig(base_url=crm, retries=0, breaker_failures=50)})
    desk.crm = gateway
    call_sid = "CA" + "a" * 32
    eid = await escalate(desk, storage, call_sid, customer_id="C1002")
    await add_agent(storage, "alice", AGENT_NUMBER)
    alice = await login(client, "alice")
    leg_id = (await (await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)).json())["leg_id"]
    params = {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "completed", "DialCallDuration": "40"}
    await twilio_posts(client, f"/twilio/desk/dial-status?leg={leg_id}", params)
    wrap = {"disposition": "follow_up", "notes": "Send the replacement label."}
    async with aiohttp.ClientSession() as http:
        await http.post(f"{crm}/_control", json={"fail_rate": 1.0})
        down = await client.post(f"/api/agent/legs/{leg_id}/wrapup", json=wrap, headers=alice)
        body = await down.json()
        assert down.status == 502 and body["retry"] is True and "Retry" in body["error"]
        assert body["leg"]["disposition"] == "follow_up" and body["leg"]["crm_status"] == "failed"  # kept here
        await http.post(f"{crm}/_control", json={"fail_rate": 0.0})
        again = await client.post(f"/api/agent/legs/{leg_id}/wrapup", json=wrap, headers=alice)
        assert again.status == 200 and (await again.json())["crm_status"] == "written"
        done = await client.post(f"/api/agent/legs/{leg_id}/wrapup", json=wrap, headers=alice)
        assert done.status == 409  # written: nothing to retry
        async with http.get(f"{crm}/customers/C1002/interactions") as got:
            assert [i["disposition"] for i in await got.json()] == ["follow_up"]
    await gateway.close()


async def test_desk_sessions_expire_end_at_logout_and_declines_are_audited(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, clock: Any
):
    eid = await escalate(desk, storage, "CA" + "b" * 32)
    await add_agent(storage, "alice", AGENT_NUMBER)
    alice = await login(client, "alice")
    assert (await client.post(f"/api/agent/escalations/{eid}/decline", headers=alice)).status == 200
    assert ("alice", "decline") in [(a["actor"], a["action"]) for a in await storage.list_audit()]
    assert (await client.post("/api/agent/logout", headers=alice)).status == 200
    assert (await client.get("/api/agent/me", headers=alice)).status == 401  # the token died with the logout
    later = await login(client, "alice")
    clock.advance(hours=12, seconds=1)
    assert (await client.get("/api/agent/me", headers=later)).status == 401  # a 12 h desk login


async def test_an_agent_left_in_wrap_up_is_available_again_after_the_wrap_up_limit(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder, clock: Any
):
    call_sid = "CA" + "c" * 32
    eid = await escalate(desk, storage, call_sid)
    await add_agent(storage, "alice", AGENT_NUMBER)
    alice = await login(client, "alice")
    leg_id = (await (await client.post(f"/api/agent/escalations/{eid}/accept", headers=alice)).json())["leg_id"]
    params = {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "completed", "DialCallDuration": "30"}
    await twilio_posts(client, f"/twilio/desk/dial-status?leg={leg_id}", params)
    clock.advance(seconds=299)
    assert (await (await client.get("/api/agent/me", headers=alice)).json())["agent"]["status"] == "wrap_up"
    clock.advance(seconds=2)
    queue = await (await client.get("/api/agent/queue", headers=alice)).json()
    assert [a["status"] for a in queue["agents"]] == ["available"]
    assert queue["me"]["agent"]["status_reason"] == "wrap-up time is over"
