"""Twilio Media Streams wire format: the only module that knows Twilio's JSON.

Inbound text frames become typed events (`telephony.events`); typed commands become outbound
text frames. Field names and types follow Twilio's documentation and its sample capture:
`sequenceNumber`, `chunk` and `timestamp` are strings, `mediaFormat.sampleRate` is a number,
`dtmf.track` is `inbound_track` while `media.track` is `inbound`, and stream SIDs are not
format-validated (the 2020 capture used a UUID).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from telephony.events import (
    AudioIn,
    CallEnded,
    CallStarted,
    Clear,
    Connected,
    DtmfIn,
    InboundEvent,
    Mark,
    MarkPlayed,
    OutboundCommand,
    PlayAudio,
    ProtocolError,
)

EXPECTED_ENCODING = "audio/x-mulaw"
EXPECTED_RATE = 8000
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class TwilioSerializer:
    """Stateless translation between Twilio JSON frames and typed events/commands."""

    def deserialize(self, raw: str | bytes) -> InboundEvent:
        if isinstance(raw, bytes):
            raise ProtocolError("binary_frame", "Twilio sends only JSON text frames; got a binary frame")
        try:
            msg = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError("invalid_json", f"invalid JSON: {exc.msg} at char {exc.pos}") from None
        if not isinstance(msg, dict):
            raise ProtocolError("malformed", f"expected a JSON object, got {type(msg).__name__}")
        kind = msg.get("event")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise ProtocolError("unknown_event", f"unknown event {kind!r}")
        try:
            return handler(msg)
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError("malformed", f"malformed {kind!r} message: {type(exc).__name__}: {exc}") from None

    def serialize(self, stream_sid: str, cmd: OutboundCommand) -> str:
        if isinstance(cmd, PlayAudio):
            payload = base64.b64encode(cmd.payload).decode("ascii")
            return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
        if isinstance(cmd, Mark):
            return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": cmd.name}})
        if isinstance(cmd, Clear):
            return json.dumps({"event": "clear", "streamSid": stream_sid})
        raise TypeError(f"not an outbound command: {cmd!r}")


def _seq(msg: dict[str, Any]) -> int:
    return int(msg["sequenceNumber"])


def _connected(msg: dict[str, Any]) -> Connected:
    return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))


def _start(msg: dict[str, Any]) -> CallStarted:
    start = msg["start"]
    fmt = start.get("mediaFormat") or {}
    encoding = fmt.get("encoding")
    rate = fmt.get("sampleRate")
    channels = fmt.get("channels", 1)
    if encoding != EXPECTED_ENCODING or int(rate) != EXPECTED_RATE or int(channels) != 1:
        raise ProtocolError(
            "unsupported_media_format",
            f"unsupported media format {encoding!r} {rate} Hz x{channels}; expected {EXPECTED_ENCODING} 8000 Hz mono",
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("malformed", "start.customParameters must be an object")
    return CallStarted(
        stream_sid=str(start.get("streamSid") or msg["streamSid"]),
        call_sid=str(start["callSid"]),
        account_sid=str(start.get("accountSid", "")),
        tracks=tuple(start.get("tracks") or ("inbound",)),
        custom_parameters={str(k): str(v) for k, v in params.items()},
        encoding=encoding,
        sample_rate=int(rate),
        channels=int(channels),
        sequence_number=_seq(msg),
    )


def _media(msg: dict[str, Any]) -> AudioIn:
    media = msg["media"]
    payload = media.get("payload")
    if not isinstance(payload, str) or not payload:
        raise ProtocolError("bad_payload", "media without a payload")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64", "media payload is not valid base64") from None
    return AudioIn(
        payload=audio,
        track=str(media.get("track", "inbound")),
        chunk=int(media.get("chunk", 0)),
        timestamp_ms=int(media.get("timestamp", 0)),
        sequence_number=_seq(msg),
    )


def _dtmf(msg: dict[str, Any]) -> DtmfIn:
    dtmf = msg["dtmf"]
    digit = str(dtmf["digit"])
    if digit not in DTMF_DIGITS:
        raise ProtocolError("bad_dtmf", f"unknown DTMF digit {digit!r}")
    return DtmfIn(digit=digit, track=str(dtmf.get("track", "inbound_track")), sequence_number=_seq(msg))


def _mark(msg: dict[str, Any]) -> MarkPlayed:
    name = (msg.get("mark") or {}).get("name")
    if not name:
        raise ProtocolError("malformed", "mark without a name")
    return MarkPlayed(name=str(name), sequence_number=_seq(msg))


def _stop(msg: dict[str, Any]) -> CallEnded:
    return CallEnded(reason="stop", sequence_number=_seq(msg))


_HANDLERS = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}
