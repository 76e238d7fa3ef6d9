"""The voice webhook (signatures, TwiML), per-call stream tokens, the records API, health, metrics, drain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from ivr.app import DRAINING, drain
from telephony.simcaller import Pause, SimulatedCaller, fetch_twiml
from tests.conftest import AUTH_TOKEN

pytestmark = pytest.mark.slow

FORM = {"CallSid": "CA" + "ab" * 16, "From": "+14155550100", "To": "+15550001111", "AccountSid": "AC" + "0" * 32}


async def post_webhook(server, form: dict[str, str], signature: str | None) -> tuple[int, str]:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(server.base_url + "/twilio/voice", data=form, headers=headers) as resp:
            return resp.status, await resp.text()


async def test_signed_webhook_answers_connect_stream_with_the_call_parameters(start_server):
    server = await start_server(twilio_auth_token=AUTH_TOKEN, insecure_dev=False)
    url = server.settings.public_url + "/twilio/voice"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, FORM)
    status, body = await post_webhook(server, FORM, signature)
    assert status == 200
    stream = ET.fromstring(body).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == server.ws_url  # ws:// because the test server's public URL is http://
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["From"] == "+14155550100" and params["CallSid"] == FORM["CallSid"]
    assert params["token"]  # the per-call token the stream must present at `start`
    assert "?" not in stream.get("url", "")  # Twilio forbids a query string on the stream URL


async def test_forged_or_missing_signature_is_refused(start_server):
    server = await start_server(twilio_auth_token=AUTH_TOKEN, insecure_dev=False)
    url = server.settings.public_url + "/twilio/voice"
    good = RequestValidator(AUTH_TOKEN).compute_signature(url, FORM)
    assert (await post_webhook(server, FORM, None))[0] == 403
    assert (await post_webhook(server, FORM, "AAAA" + good[4:]))[0] == 403
    assert (await post_webhook(server, {**FORM, "From": "+19999999999"}, good))[0] == 403  # tampered body
    value = server.services.metrics.registry.get_sample_value("ivr_errors_total", {"kind": "bad_signature"})
    assert value == 3


async def test_stream_without_the_webhooks_token_is_refused_and_with_it_accepted(start_server):
    server = await start_server(twilio_auth_token=AUTH_TOKEN, insecure_dev=False)
    intruder = SimulatedCaller(server.ws_url)
    result = await intruder.run([Pause(1.0)])
    assert result.closed_by_server and not result.frame_arrivals
    assert intruder.call_sid not in server.services.sessions

    ws_url, params = await fetch_twiml(server.base_url + "/twilio/voice", dict(FORM), AUTH_TOKEN)
    caller = SimulatedCaller(ws_url, call_sid=params["CallSid"], custom_parameters=params)
    result = await caller.run([Pause(1.5)])
    assert result.frame_arrivals, "a caller with a valid token was not answered"


async def test_call_record_api_needs_the_token_and_returns_the_call(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url)
    await caller.run([Pause(0.5)])
    await server.wait_call_closed(caller.call_sid)
    status, _ = await server.get_json(f"/api/calls/{caller.call_sid}", token=None)
    assert status == 401
    status, _ = await server.get_json(f"/api/calls/{caller.call_sid}", token="wrong")
    assert status == 401
    status, record = await server.get_json(f"/api/calls/{caller.call_sid}")
    assert status == 200
    assert record["call_sid"] == caller.call_sid and record["caller"] == "+14155550100"
    assert record["started_at"] and record["ended_at"]
    assert [e["kind"] for e in record["events"]][0] == "start"
    assert (await server.get_json("/api/calls/CAnope"))[0] == 404


async def test_metrics_are_prometheus_text(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url)
    await caller.run([Pause(1.5)])
    await server.wait_call_closed(caller.call_sid)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.base_url + "/metrics") as resp:
            text = await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
    assert "ivr_active_calls 0.0" in text
    frames_out = [line for line in text.splitlines() if line.startswith("ivr_frames_out_total")]
    assert frames_out and float(frames_out[0].split()[-1]) > 10
    assert "ivr_frames_in_total" in text and "ivr_first_greeting_seconds_bucket" in text
    # Whisper and Piper run in worker processes; one that dies is started again and counted here.
    assert 'ivr_model_worker_restarts{model="asr"} 0.0' in text
    assert 'ivr_model_worker_restarts{model="tts"} 0.0' in text


async def test_drain_turns_health_503_lets_live_calls_run_then_closes_them(start_server):
    server = await start_server()
    status, _ = await server.get_json("/healthz", token=None)
    assert status == 200
    caller = SimulatedCaller(server.ws_url)
    call = asyncio.create_task(caller.run([Pause(3.0)]))
    while caller.call_sid not in server.services.sessions:
        await asyncio.sleep(0.02)
    drain_task = asyncio.create_task(drain(server.app, deadline_s=1.0))
    await asyncio.sleep(0.3)
    assert server.app[DRAINING].is_set()
    status, body = await server.get_json("/healthz", token=None)
    assert status == 503 and body["status"] == "draining"
    assert caller.call_sid in server.services.sessions  # the live call is not cut at once
    remaining = await drain_task
    assert remaining == 1
    result = await call
    assert result.closed_by_server
    record = await server.wait_call_closed(caller.call_sid)
    assert record["end_reason"] == "server_shutdown"


def test_serve_refuses_to_start_without_an_auth_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
    env["IVR_DATA_DIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "serve", "--port", "0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert "IVR_TWILIO_AUTH_TOKEN" in proc.stderr and "--insecure-dev" in proc.stderr
