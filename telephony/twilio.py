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
import math
from collections.abc import Callable
from dataclasses import dataclass
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
from telephony.twiml import is_valid_stream_token

EXPECTED_ENCODING = "audio/x-mulaw"
EXPECTED_RATE = 8000
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# `media.track` names the caller "inbound"; `dtmf.track` says "inbound_track".
CALLER_TRACKS = frozenset({"inbound", "inbound_track"})
MAX_SEQUENCE_DIGITS = 18


class TwilioSerializer:
    """Translation between one Twilio media stream's JSON frames and typed events/commands.

    `stream_secret` (the account's auth token) checks the per-call token that the voice webhook put in
    the stream's parameters; without it (development only) any start is accepted. The token is used
    once: a second stream presenting it is the same call replayed and is refused. `first_use(token)` is
    that memory, owned by the server process: it answers True the first time it sees a token and False
    after that. The token is also short-lived (`telephony.twiml.STREAM_TOKEN_MAX_AGE_S`).
    """

    carrier = "twilio"

    def __init__(self, stream_secret: str | None = None, *, first_use: Callable[[str], bool] | None = None) -> None:
        self._secret = stream_secret
        self._first_use = first_use
        self.stream_sid: str | None = None

    def deserialize(self, raw: str | bytes) -> InboundEvent:
        msg = _json_object(raw, "Twilio sends only JSON text frames; got a binary frame")
        kind = msg.get("event")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise ProtocolError("unknown_event", f"unknown event {kind!r}")
        try:
            event = handler(msg)
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ProtocolError("malformed", f"malformed {kind!r} message: {type(exc).__name__}: {exc}") from None
        if isinstance(event, _Start):
            return self._started(event)
        return event

    def _started(self, start: _Start) -> CallStarted:
        if self._secret and not is_valid_stream_token(self._secret, start.call_sid, start.params.get("token")):
            raise ProtocolError(
                "bad_stream_token",
                "start without a valid per-call token: stream refused",
                fatal=True,
                call_id=start.call_sid,
            )
        if self._secret and self._first_use is not None and not self._first_use(str(start.params["token"])):
            raise ProtocolError(
                "replayed_stream_token",
                "start with a stream token that was already used: stream refused",
                fatal=True,
                call_id=start.call_sid,
            )
        if self.stream_sid is None:
            self.stream_sid = start.stream_sid
        params = {k: v for k, v in start.params.items() if k != "token"}
        return CallStarted(
            call_id=start.call_sid,
            stream_id=start.stream_sid,
            caller=params.get("From") or params.get("Caller") or None,
            params=params,
            sequence_number=start.sequence_number,
            carrier=self.carrier,
        )

    def serialize(self, cmd: OutboundCommand) -> str:
        stream_sid = self.stream_sid
        if stream_sid is None:
            raise ProtocolError("not_started", "nothing may be sent before start: there is no streamSid yet")
        if isinstance(cmd, PlayAudio):
            payload = base64.b64encode(cmd.payload).decode("ascii")
            return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
        if isinstance(cmd, Mark):
            return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": cmd.name}})
        if isinstance(cmd, Clear):
            return json.dumps({"event": "clear", "streamSid": stream_sid})
        raise TypeError(f"not an outbound command: {cmd!r}")


@dataclass(frozen=True, slots=True)
class _Start:
    """Twilio's start message before its credentials are checked."""

    call_sid: str
    stream_sid: str
    params: dict[str, str]
    sequence_number: int


def _json_object(raw: str | bytes, binary_message: str) -> dict[str, Any]:
    """Every Twilio frame, either way, is one JSON object in a text frame."""
    if isinstance(raw, bytes):
        raise ProtocolError("binary_frame", binary_message)
    try:
        msg = _DECODER.decode(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"invalid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise ProtocolError("invalid_json", "JSON nested too deeply") from None
    except ValueError as exc:  # NaN, Infinity, 1e999, an integer of thousands of digits
        raise ProtocolError("invalid_json", f"invalid JSON number: {str(exc)[:80]}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("malformed", f"expected a JSON object, got {type(msg).__name__}")
    return msg


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


# One decoder for every frame: `json.loads` with hooks builds a new decoder per call (a fifth of its time in a
# profile of the server; 50 frames a second per call). It holds no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _seq(msg: dict[str, Any]) -> int:
    raw = msg["sequenceNumber"]
    if isinstance(raw, bool) or not isinstance(raw, str | int) or len(str(raw)) > MAX_SEQUENCE_DIGITS:
        raise ValueError(f"sequenceNumber must be a number of at most {MAX_SEQUENCE_DIGITS} digits")
    return int(raw)


def _connected(msg: dict[str, Any]) -> Connected:
    return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))


def _start(msg: dict[str, Any]) -> _Start:
    start = msg["start"]
    fmt = start.get("mediaFormat") or {}
    encoding = fmt.get("encoding")
    rate = fmt.get("sampleRate")
    channels = fmt.get("channels", 1)
    if encoding != EXPECTED_ENCODING or int(str(rate)) != EXPECTED_RATE or int(channels) != 1:
        raise ProtocolError(
            "unsupported_media_format",
            f"unsupported media format {encoding!r} {rate} Hz x{channels}; expected {EXPECTED_ENCODING} 8000 Hz mono",
            fatal=True,
            call_id=str(start.get("callSid") or "") or None,
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("malformed", "start.customParameters must be an object")
    return _Start(
        call_sid=str(start["callSid"]),
        stream_sid=str(start.get("streamSid") or msg["streamSid"]),
        params={str(k): str(v) for k, v in params.items()},
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
    track = media.get("track", "inbound")
    return AudioIn(payload=audio, track="caller" if track in CALLER_TRACKS else "bot", sequence_number=_seq(msg))


def _dtmf(msg: dict[str, Any]) -> DtmfIn:
    dtmf = msg["dtmf"]
    digit = str(dtmf["digit"])
    if digit not in DTMF_DIGITS:
        raise ProtocolError("bad_dtmf", f"unknown DTMF digit {digit!r}")
    return DtmfIn(digit=digit, sequence_number=_seq(msg))


def _mark(msg: dict[str, Any]) -> MarkPlayed:
    name = (msg.get("mark") or {}).get("name")
    if not name:
        raise ProtocolError("malformed", "mark without a name")
    return MarkPlayed(name=str(name), sequence_number=_seq(msg))


def _stop(msg: dict[str, Any]) -> CallEnded:
    return CallEnded(reason="stop", sequence_number=_seq(msg))


_HANDLERS: dict[str, Callable[[dict[str, Any]], InboundEvent | _Start]] = {
    "connected": _connected,
    "start": _start,
    "media": _media,
    "dtmf": _dtmf,
    "mark": _mark,
    "stop": _stop,
}


class TwilioCallerCodec:
    """Twilio's side of one media stream: builds the frames Twilio sends, parses the frames the server sends.

    For the simulated caller, the benchmark and tests, so that they speak the protocol exactly as Twilio does
    (see the module docstring) without knowing its JSON. One codec per stream: it numbers the frames
    (`sequenceNumber` from 1 on `start` across every later frame; media `chunk` from 1, `timestamp` in ms of
    audio sent) and refuses server frames that name another stream.
    """

    def __init__(self, *, stream_sid: str, call_sid: str, account_sid: str) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        # The number of the last frame built. Set it to replay a frame (lower) or lose some (higher), as a
        # misbehaving network or a carrier bug would.
        self.sequence_number = 0
        self._chunk = 0
        self._audio_ms = 0

    def _frame(self, event: str, body: dict[str, Any]) -> str:
        self.sequence_number += 1
        seq = str(self.sequence_number)
        return json.dumps({"event": event, "sequenceNumber": seq, **body, "streamSid": self.stream_sid})

    # -- Twilio -> server ------------------------------------------------------------------------------
    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(
        self,
        custom_parameters: dict[str, str] | None = None,
        *,
        media_format: tuple[str, int, int] = (EXPECTED_ENCODING, EXPECTED_RATE, 1),
    ) -> str:
        """`custom_parameters`: the TwiML <Parameter>s of the <Stream> (the stream token among them);
        `media_format`: (encoding, sample rate, channels), always mu-law 8 kHz mono from Twilio itself."""
        encoding, rate, channels = media_format
        return self._frame(
            "start",
            {
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": dict(custom_parameters or {}),
                    "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": channels},
                }
            },
        )

    def media(self, payload: bytes) -> str:
        """One chunk of caller audio, 8 kHz mu-law (Twilio sends 160 bytes = 20 ms per chunk)."""
        self._chunk += 1
        self._audio_ms += len(payload) * 1000 // EXPECTED_RATE
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(self._audio_ms),
            "payload": base64.b64encode(payload).decode("ascii"),
        }
        return self._frame("media", {"media": media})

    def dtmf(self, digit: str) -> str:
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        return self._frame("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})

    def mark(self, name: str) -> str:
        """The echo of a server mark whose audio has played (or was cleared)."""
        return self._frame("mark", {"mark": {"name": name}})

    def stop(self) -> str:
        return self._frame("stop", {"stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})

    # -- server -> Twilio ------------------------------------------------------------------------------
    def parse(self, raw: str | bytes) -> OutboundCommand:
        """A server frame as the typed command it carries; `ProtocolError` for anything Twilio would refuse."""
        msg = _json_object(raw, "the server sent a binary frame; Twilio accepts only JSON text")
        kind = msg.get("event")
        if msg.get("streamSid") != self.stream_sid:
            raise ProtocolError("wrong_stream", f"{kind!r} for stream {msg.get('streamSid')!r}, not {self.stream_sid}")
        if kind == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str) or not payload:
                raise ProtocolError("bad_payload", "media without a payload")
            try:
                return PlayAudio(base64.b64decode(payload, validate=True))
            except (binascii.Error, ValueError):
                raise ProtocolError("bad_base64", "media payload is not valid base64") from None
        if kind == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                raise ProtocolError("malformed", "mark without a name")
            return Mark(name)
        if kind == "clear":
            return Clear()
        raise ProtocolError("unknown_event", f"unknown event {kind!r}")
