"""The caller's side of the Twilio wire format (what the simulated caller and the benchmark speak):
its frames have the shape of Twilio's documented ones and round-trip through the server's serializer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from telephony.events import (
    AudioIn,
    CallEnded,
    CallStarted,
    Clear,
    Connected,
    DtmfIn,
    Mark,
    MarkPlayed,
    PlayAudio,
    ProtocolError,
)
from telephony.twilio import TwilioCallerCodec, TwilioSerializer
from telephony.twiml import stream_token

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "twilio-sample-sequence.json"
CALL = "CA" + "1" * 32
STREAM = "MZ" + "2" * 32
ACCOUNT = "AC" + "3" * 32
SPEECH = bytes(range(256))[:160]


def caller(stream_sid: str = STREAM, call_sid: str = CALL) -> TwilioCallerCodec:
    return TwilioCallerCodec(stream_sid=stream_sid, call_sid=call_sid, account_sid=ACCOUNT)


def shape(value: Any) -> Any:
    """Keys and value types, recursively: what must match Twilio's frames, whatever the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    return json.loads(SAMPLE.read_text())


def test_frames_have_the_shape_of_twilios_documented_ones(sample):
    documented = {}
    for msg in sample["twilio_messages"]:
        documented.setdefault(msg["event"], msg)
    codec = caller(stream_sid=documented["start"]["streamSid"], call_sid=documented["start"]["start"]["callSid"])
    built = {
        "connected": codec.connected(),
        "start": codec.start(documented["start"]["start"]["customParameters"]),
        "media": codec.media(SPEECH),
        "dtmf": codec.dtmf("1"),
        "mark": codec.mark("my label"),
        "stop": codec.stop(),
    }
    assert set(built) == set(documented)
    for event, frame in built.items():
        assert shape(json.loads(frame)) == shape(documented[event]), event
    assert json.loads(built["connected"]) == documented["connected"]
    start = json.loads(built["start"])["start"]
    assert start["mediaFormat"] == documented["start"]["start"]["mediaFormat"]
    assert start["customParameters"] == documented["start"]["start"]["customParameters"]
    assert json.loads(built["dtmf"])["dtmf"] == documented["dtmf"]["dtmf"]


def test_frames_are_numbered_as_twilio_numbers_them():
    codec = caller()
    frames = [json.loads(f) for f in (codec.start({}), codec.media(SPEECH), codec.media(SPEECH[:80]), codec.stop())]
    assert [f["sequenceNumber"] for f in frames] == ["1", "2", "3", "4"]
    media = [f["media"] for f in frames if f["event"] == "media"]
    assert [(m["chunk"], m["timestamp"], m["track"]) for m in media] == [("1", "20", "inbound"), ("2", "30", "inbound")]
    assert all(f["streamSid"] == STREAM for f in frames)
    with pytest.raises(ValueError):
        codec.dtmf("x")


def test_what_the_caller_sends_parses_into_the_servers_typed_events():
    codec = caller()
    server = TwilioSerializer()
    events = [
        server.deserialize(frame)
        for frame in (
            codec.connected(),
            codec.start({"From": "+14155550100", "Greeting": "short"}),
            codec.media(SPEECH),
            codec.dtmf("#"),
            codec.mark("greeting#1:40"),
            codec.stop(),
        )
    ]
    connected, started, audio, digit, played, ended = events
    assert isinstance(connected, Connected)
    assert isinstance(started, CallStarted)
    assert (started.call_id, started.stream_id, started.caller) == (CALL, STREAM, "+14155550100")
    assert started.params == {"From": "+14155550100", "Greeting": "short"}
    assert isinstance(audio, AudioIn) and audio.payload == SPEECH and audio.track == "caller"
    assert isinstance(digit, DtmfIn) and digit.digit == "#"
    assert isinstance(played, MarkPlayed) and played.name == "greeting#1:40"
    assert isinstance(ended, CallEnded)
    assert [e.sequence_number for e in events[1:]] == [1, 2, 3, 4, 5]


def test_the_stream_token_passes_the_servers_check():
    secret = "auth-token"
    server = TwilioSerializer(stream_secret=secret)
    started = server.deserialize(caller().start({"From": "+14155550100", "token": stream_token(secret, CALL)}))
    assert isinstance(started, CallStarted) and "token" not in started.params
    with pytest.raises(ProtocolError) as refused:
        TwilioSerializer(stream_secret=secret).deserialize(caller().start({"token": stream_token(secret, "CA0")}))
    assert refused.value.kind == "bad_stream_token"


def test_what_the_server_sends_parses_into_the_commands_it_sent():
    codec = caller()
    server = TwilioSerializer()
    server.deserialize(codec.start({}))
    for command in (PlayAudio(SPEECH), Mark("reply#2:10"), Clear()):
        assert codec.parse(server.serialize(command)) == command


def test_documented_server_frames_parse(sample):
    stream_sid = sample["twilio_messages"][1]["streamSid"]
    codec = caller(stream_sid=stream_sid)
    sent = [m["msg"] for m in sample["sequence"] if m["dir"] == "server->twilio"]
    commands = [codec.parse(json.dumps(msg)) for msg in sent]
    assert commands and all(isinstance(c, (PlayAudio, Mark, Clear)) for c in commands)
    assert Mark("my label") in commands
    assert [len(c.payload) for c in commands if isinstance(c, PlayAudio)] == [1600]  # 200 ms in one frame


@pytest.mark.parametrize(
    ("kind", "frame"),
    [
        ("wrong_stream", {"event": "clear", "streamSid": "MZ" + "9" * 32}),
        ("wrong_stream", {"event": "clear"}),
        ("unknown_event", {"event": "transcription", "streamSid": STREAM}),
        ("bad_payload", {"event": "media", "streamSid": STREAM, "media": {}}),
        ("bad_base64", {"event": "media", "streamSid": STREAM, "media": {"payload": "!!notbase64!!"}}),
        ("malformed", {"event": "mark", "streamSid": STREAM, "mark": {"name": ""}}),
        ("malformed", {"event": "mark", "streamSid": STREAM, "mark": "name"}),
    ],
)
def test_frames_twilio_would_refuse_raise_protocol_errors(kind, frame):
    with pytest.raises(ProtocolError) as err:
        caller().parse(json.dumps(frame))
    assert err.value.kind == kind


@pytest.mark.parametrize(("kind", "raw"), [("binary_frame", b"{}"), ("invalid_json", "{"), ("malformed", "[]")])
def test_undecodable_frames_raise_protocol_errors(kind, raw):
    with pytest.raises(ProtocolError) as err:
        caller().parse(raw)
    assert err.value.kind == kind
