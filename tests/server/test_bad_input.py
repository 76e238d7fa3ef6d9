"""Bad input at the socket: a stream that closes without `stop`, and a 10 MB message, end the call record cleanly
while other calls keep flowing. Bad frames inside a stream are tested on virtual time (tests/session/)."""

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
    """Well-formed frames of one new stream, numbered as Twilio numbers them."""
    return TwilioCallerCodec(
        stream_sid="MZ" + secrets.token_hex(16), call_sid="CA" + secrets.token_hex(16), account_sid="AC" + "0" * 32
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


async def test_the_media_stream_does_not_deflate_audio_even_when_the_carrier_offers_it(start_server):
    import websockets

    server = await start_server()
    async with websockets.connect(server.ws_url, compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # permessage-deflate declined
