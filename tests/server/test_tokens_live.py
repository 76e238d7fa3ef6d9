"""Black-box, against the live server: credentials never reach the log, and a stream token works once.

An auditor reads the server log after an agent used the desk (REST and WebSocket) and a caller used a
callback link, including a client that put the bearer token in URLs: no token, ticket or callback
token may appear in any line. A replayed stream token is refused like a forged one.
"""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest

from ivr import agents as ag
from ivr.storage import utcnow
from telephony.simcaller import Pause, SimulatedCaller, fetch_twiml
from tests.conftest import API_TOKEN, AUTH_TOKEN

pytestmark = pytest.mark.slow

CALL_SID = "CA" + "5e" * 16
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
AGENT_PASSWORD = "alice-desk-password"


async def test_after_the_desk_is_used_the_server_log_holds_no_token(start_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = await start_server()
    db, desk = server.services.db, server.services.desk
    await db.start_call(CALL_SID, stream_sid="MZ" + CALL_SID[2:], caller="+14155550123", params={})
    escalation_id = await desk.enqueue(
        CALL_SID, trigger="asked_for_human", reason="wants a person", queue="general", priority=50, payload={}
    )
    callback = await server.services.callbacks.request(CALL_SID, "+14155552671", None, {"queue": "general"})
    secrets = {API_TOKEN, callback["token"]}
    base, ws_base = server.base_url, server.base_url.replace("http://", "ws://")

    async with aiohttp.ClientSession() as http:
        # A careless client puts the token in URLs: refused on the API, never written down.
        async with http.get(f"{base}/agent?token={API_TOKEN}") as resp:
            assert resp.status == 200
        for path in ("/api/agent/queue", f"/api/calls/{CALL_SID}", f"/api/agent/escalations/{escalation_id}"):
            async with http.get(f"{base}{path}?token={API_TOKEN}") as resp:
                assert resp.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{ws_base}/api/agent/ws?token={API_TOKEN}&skill=general")
        assert refused.value.status == 401

        # The desk as the page uses it: header for REST, a single-use ticket for the WebSocket.
        async with http.get(f"{base}/api/agent/queue", headers=BEARER) as resp:
            assert [i["id"] for i in (await resp.json())["items"] if i["kind"] == "escalation"] == [escalation_id]
        async with http.post(f"{base}/api/agent/ws-ticket", headers=BEARER) as resp:
            ticket = (await resp.json())["ticket"]
        secrets.add(ticket)
        ws = await http.ws_connect(f"{ws_base}/api/agent/ws?ticket={ticket}")
        assert (await ws.receive_json(timeout=5))["type"] == "queue"
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"{ws_base}/api/agent/ws?ticket={ticket}")
        # An agent logs in (an account made as `ivr agents add` makes it); their session token stays out of logs too.
        await db.run(
            ag.add_agent,
            db.sync,
            "alice",
            display_name="Alice",
            reach=ag.Reach.parse("+14155550111"),
            password=AGENT_PASSWORD,
            now=utcnow(),
        )
        async with http.post(f"{base}/api/agent/login", json={"name": "alice", "password": AGENT_PASSWORD}) as resp:
            session = (await resp.json())["token"]
        secrets |= {session, AGENT_PASSWORD}
        alice = {"Authorization": f"Bearer {session}"}
        async with http.post(f"{base}/api/agent/status", json={"status": "available"}, headers=alice) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/api/agent/escalations/{escalation_id}/accept", headers=alice) as resp:
            assert resp.status == 200

        # The caller's callback link: the page and a booking.
        link = f"{base}/callback/{callback['token']}"
        async with http.get(link) as resp:
            slot = re.findall(r'name="slot" value="([^"]+)"', await resp.text())[0]
        async with http.post(link, data={"slot": slot}) as resp:
            assert resp.status == 200

    await db.run(lambda: None)  # every queued write (and its log line) has landed
    lines = [caplog.text] + [r.getMessage() for r in caplog.records]
    leaked = {s for s in secrets for line in lines if s in line}
    assert not leaked, f"credentials in the log: {leaked}"
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/api/agent/ws?token=[redacted]" in line for line in access)
    assert any("/api/agent/ws?ticket=[redacted]" in line for line in access)
    assert any("/callback/[redacted]" in line for line in access)


async def test_a_replayed_stream_token_is_refused(start_server):
    server = await start_server(twilio_auth_token=AUTH_TOKEN, insecure_dev=False)
    form = {"CallSid": CALL_SID, "From": "+14155550100", "To": "+15550001111", "AccountSid": "AC" + "0" * 32}
    ws_url, params = await fetch_twiml(server.base_url + "/twilio/voice", form, AUTH_TOKEN)

    first = await SimulatedCaller(ws_url, call_sid=CALL_SID, custom_parameters=params).run([Pause(1.5)])
    assert first.frame_arrivals, "the first stream with the webhook's token was not answered"
    record = await server.wait_call_closed(CALL_SID)

    replay = await SimulatedCaller(ws_url, call_sid=CALL_SID, custom_parameters=params).run([Pause(1.0)])
    assert replay.closed_by_server and not replay.frame_arrivals
    errors = server.services.metrics.registry.get_sample_value("ivr_errors_total", {"kind": "replayed_stream_token"})
    assert errors == 1
    assert await server.services.db.get_call(CALL_SID) == record  # the replay changed nothing on record
