"""Bad input from the carrier: each case is logged with the call id, counted, the record stays consistent,
and the server keeps serving other calls."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import aiohttp
import pytest

from telephony.simcaller import Pause, SimulatedCaller
from telephony.twilio import TwilioCallerCodec

pytestmark = pytest.mark.slow

FROM = {"From": "+14155550109"}
SILENCE = b"\xff" * 160


def twilio_stream() -> TwilioCallerCodec:
    """Well-formed frames of one new stream, numbered as Twilio numbers them (the bad ones below are by hand)."""
    return TwilioCallerCodec(
        stream_sid="MZ" + secrets.token_hex(16), call_sid="CA" + secrets.token_hex(16), account_sid="AC" + "0" * 32
    )


def start_msg_in_format(call_sid: str, stream_sid: str, encoding: str, rate: int, seq: int = 1) -> str:
    """A `start` in a media format Twilio never sends to a <Connect><Stream>: deliberately wrong."""
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


def error_count(server, kind: str) -> float:
    value = server.services.metrics.registry.get_sample_value("ivr_errors_total", {"kind": kind})
    return value or 0.0


async def send_raw(server, stream: TwilioCallerCodec, messages: list[str | bytes], *, stop: bool = True) -> None:
    """`connected`, the messages ({STREAM} in a hand-written one is the stream's SID), then `stop`."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url, max_msg_size=0) as ws:
            await ws.send_str(stream.connected())
            for m in messages:
                if isinstance(m, bytes):
                    await ws.send_bytes(m)
                else:
                    await ws.send_str(m.replace("{STREAM}", stream.stream_sid))
            if stop:
                await ws.send_str(stream.stop())
            try:
                await asyncio.wait_for(ws.receive(), timeout=0.3)
            except TimeoutError:
                pass


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
    stream = twilio_stream()
    call_sid = stream.call_sid
    start, media2, media3 = stream.start(FROM), stream.media(SILENCE), stream.media(SILENCE)
    messages: list[str | bytes] = [start, media2, media3]
    if bad == "OUT_OF_ORDER":
        messages += [media2]  # a replayed, stale frame
    else:
        messages.append(bad)
    messages += [stream.media(SILENCE), stream.media(SILENCE)]
    await send_raw(server, stream, messages)
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
    stream = twilio_stream()
    await send_raw(server, stream, [stream.media(SILENCE), stream.start(FROM), stream.media(SILENCE)])
    record = await server.wait_call_closed(stream.call_sid)
    assert error_count(server, "media_before_start") == before + 1
    assert record["outcome"] == "silent"


async def test_wrong_media_format_ends_the_stream_with_a_clear_error(start_server, caplog):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, "unsupported_media_format")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url) as ws:
            await ws.send_str(start_msg_in_format("CA" + "1" * 32, "MZ" + "1" * 32, "audio/x-l16", 16000))
            msg = await asyncio.wait_for(ws.receive(), timeout=2)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert error_count(server, "unsupported_media_format") == before + 1
    assert any("expected audio/x-mulaw 8000 Hz mono" in r.getMessage() for r in caplog.records)
    assert server.services.sessions == {}


async def test_socket_closed_without_stop_ends_the_call_record(start_server):
    server = await start_server()
    stream = twilio_stream()
    await send_raw(server, stream, [stream.start(FROM), stream.media(SILENCE)], stop=False)
    record = await server.wait_call_closed(stream.call_sid, timeout=2.0)
    assert record["end_reason"] == "socket_closed"
    assert record["outcome"] == "silent"


async def test_a_10_mb_message_is_refused_and_other_calls_keep_flowing(start_server, caplog):
    server = await start_server()
    caplog.set_level(logging.WARNING, logger="ivr.session")
    before = error_count(server, "message_too_big")
    # A healthy call runs alongside the abusive one.
    healthy = SimulatedCaller(server.ws_url)
    healthy_task = asyncio.create_task(healthy.run([Pause(2.0)]))
    stream = twilio_stream()
    call_sid = stream.call_sid
    huge = json.dumps(
        {"event": "media", "sequenceNumber": "2", "streamSid": "x", "media": {"payload": "A" * (10 * 1024 * 1024)}}
    )
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url, max_msg_size=0) as ws:
            await ws.send_str(stream.start(FROM))
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
