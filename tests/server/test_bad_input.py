"""Bad input from the carrier: each case is logged with the call id, counted, the record stays consistent,
and the server keeps serving other calls."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets

import aiohttp
import pytest

from telephony.simcaller import Pause, SimulatedCaller

pytestmark = pytest.mark.slow


def start_msg(call_sid: str, stream_sid: str, seq: int = 1, encoding: str = "audio/x-mulaw", rate: int = 8000) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": {"From": "+14155550109"},
                "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1},
            },
        }
    )


def media_msg(stream_sid: str, seq: int, payload: bytes = b"\xff" * 160) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(seq - 1),
                "timestamp": str(20 * seq),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def stop_msg(call_sid: str, stream_sid: str, seq: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_sid},
        }
    )


def error_count(server, kind: str) -> float:
    value = server.services.metrics.registry.get_sample_value("ivr_errors_total", {"kind": kind})
    return value or 0.0


async def send_raw(server, messages: list[str | bytes], *, stop: bool = True, call_sid: str | None = None):
    call_sid = call_sid or "CA" + secrets.token_hex(16)
    stream_sid = "MZ" + secrets.token_hex(16)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url, max_msg_size=0) as ws:
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            for m in messages:
                m = m.replace("{CALL}", call_sid).replace("{STREAM}", stream_sid) if isinstance(m, str) else m
                if isinstance(m, bytes):
                    await ws.send_bytes(m)
                else:
                    await ws.send_str(m)
            if stop:
                await ws.send_str(stop_msg(call_sid, stream_sid, 9999))
            try:
                await asyncio.wait_for(ws.receive(), timeout=0.3)
            except TimeoutError:
                pass
    return call_sid, stream_sid


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("unknown_event", '{"event": "transcription", "sequenceNumber": "3", "streamSid": "{STREAM}"}'),
        ("invalid_json", '{"event": "media", "sequenceNumber": '),
        (
            "bad_base64",
            '{"event": "media", "sequenceNumber": "3", "streamSid": "{STREAM}", "media": {"payload": "!!notbase64!!"}}',
        ),
        ("binary_frame", b"\x00\x01\x02"),
        ("out_of_order", "OUT_OF_ORDER"),
    ],
)
async def test_bad_message_is_logged_counted_and_the_call_goes_on(start_server, caplog, kind, bad):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, kind)
    call_sid = "CA" + secrets.token_hex(16)
    messages: list[str | bytes] = [start_msg("{CALL}", "{STREAM}"), media_msg("{STREAM}", 2), media_msg("{STREAM}", 3)]
    if bad == "OUT_OF_ORDER":
        messages += [media_msg("{STREAM}", 2)]  # a replayed, stale frame
    else:
        messages.append(bad)
    messages += [media_msg("{STREAM}", 4), media_msg("{STREAM}", 5)]
    await send_raw(server, messages, call_sid=call_sid)
    record = await server.wait_call_closed(call_sid)

    assert error_count(server, kind) == before + 1
    errors = [e for e in record["events"] if e["kind"] == "error"]
    assert [e["data"]["kind"] for e in errors] == [kind]
    logged = [r for r in caplog.records if kind in r.getMessage()]
    assert logged and getattr(logged[0], "call_sid", None) == call_sid
    assert record["end_reason"] == "caller_hung_up" and record["ended_at"]


async def test_media_before_start_is_dropped_and_counted(start_server, caplog):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, "media_before_start")
    call_sid, _ = await send_raw(
        server, [media_msg("{STREAM}", 1), start_msg("{CALL}", "{STREAM}", seq=2), media_msg("{STREAM}", 3)]
    )
    record = await server.wait_call_closed(call_sid)
    assert error_count(server, "media_before_start") == before + 1
    assert record["outcome"] == "silent"


async def test_wrong_media_format_ends_the_stream_with_a_clear_error(start_server, caplog):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, "unsupported_media_format")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url) as ws:
            await ws.send_str(start_msg("CA" + "1" * 32, "MZ" + "1" * 32, encoding="audio/x-l16", rate=16000))
            msg = await asyncio.wait_for(ws.receive(), timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert error_count(server, "unsupported_media_format") == before + 1
    assert any("expected audio/x-mulaw 8000 Hz mono" in r.getMessage() for r in caplog.records)
    assert server.services.sessions == {}


async def test_socket_closed_without_stop_ends_the_call_record(start_server):
    server = await start_server()
    call_sid = "CA" + secrets.token_hex(16)
    await send_raw(server, [start_msg("{CALL}", "{STREAM}"), media_msg("{STREAM}", 2)], stop=False, call_sid=call_sid)
    record = await server.wait_call_closed(call_sid, timeout=2.0)
    assert record["end_reason"] == "socket_closed"
    assert record["outcome"] == "silent"


async def test_a_10_mb_message_is_refused_and_other_calls_keep_flowing(start_server, caplog):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, "message_too_big")
    # A healthy call runs alongside the abusive one.
    healthy = SimulatedCaller(server.ws_url)
    healthy_task = asyncio.create_task(healthy.run([Pause(2.0)]))
    call_sid = "CA" + secrets.token_hex(16)
    huge = json.dumps(
        {"event": "media", "sequenceNumber": "2", "streamSid": "x", "media": {"payload": "A" * (10 * 1024 * 1024)}}
    )
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url, max_msg_size=0) as ws:
            await ws.send_str(start_msg(call_sid, "MZ" + secrets.token_hex(16)))
            await asyncio.sleep(0.2)
            try:
                await ws.send_str(huge)
                msg = await asyncio.wait_for(ws.receive(), timeout=5)
                while msg.type == aiohttp.WSMsgType.TEXT:
                    msg = await asyncio.wait_for(ws.receive(), timeout=5)
            except ConnectionError:
                pass  # the server may close the socket before the whole 10 MB has been written
    record = await server.wait_call_closed(call_sid)
    assert record["end_reason"] == "message_too_big" and record["outcome"] == "error"
    assert error_count(server, "message_too_big") == before + 1
    result = await healthy_task
    assert result.frame_arrivals, "the healthy call stopped getting audio"
    healthy_record = await server.wait_call_closed(healthy.call_sid)
    assert healthy_record["end_reason"] == "caller_hung_up"
