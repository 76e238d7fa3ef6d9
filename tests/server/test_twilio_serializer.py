"""The Twilio wire format, against the documented sample sequence Twilio sends."""

from __future__ import annotations

import base64
import json
from pathlib import Path

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
from telephony.twilio import TwilioSerializer
from telephony.twiml import stream_token

SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "twilio-sample-sequence.json"


@pytest.fixture(scope="module")
def sample_messages() -> list[dict]:
    return json.loads(SAMPLE.read_text())["twilio_messages"]


def test_documented_sequence_parses_into_typed_events(sample_messages):
    ser = TwilioSerializer()
    events = [ser.deserialize(json.dumps(m)) for m in sample_messages]
    assert isinstance(events[0], Connected)
    start = events[1]
    assert isinstance(start, CallStarted)
    assert start.call_id.startswith("CA") and start.stream_id.startswith("MZ")
    assert start.params == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    assert start.carrier == "twilio" and start.caller is None
    media = [e for e in events if isinstance(e, AudioIn)]
    assert media and all(len(m.payload) == 160 and m.track == "caller" for m in media)
    assert any(isinstance(e, DtmfIn) for e in events)
    assert any(isinstance(e, MarkPlayed) for e in events)
    assert isinstance(events[-1], CallEnded)
    seqs = [getattr(e, "sequence_number", None) for e in events[1:]]
    assert seqs == sorted(seqs) and seqs[0] == 1


def _started(ser: TwilioSerializer, stream_sid: str = "MZ1", **params: str) -> CallStarted:
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "callSid": "CA1",
            "streamSid": stream_sid,
            "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    event = ser.deserialize(json.dumps(start))
    assert isinstance(event, CallStarted)
    return event


def test_nothing_is_sent_before_the_stream_has_started():
    with pytest.raises(ProtocolError) as err:
        TwilioSerializer().serialize(Clear())
    assert err.value.kind == "not_started"


def test_stream_token_is_checked_and_never_handed_on():
    secret = "auth-token"
    good = _started(TwilioSerializer(stream_secret=secret), From="+14155550100", token=stream_token(secret, "CA1"))
    assert good.caller == "+14155550100" and "token" not in good.params
    for token in ({}, {"token": "forged"}, {"token": stream_token(secret, "CA2")}):
        with pytest.raises(ProtocolError) as err:
            _started(TwilioSerializer(stream_secret=secret), **token)
        assert err.value.kind == "bad_stream_token" and err.value.fatal and err.value.call_id == "CA1"


def test_only_the_callers_track_is_caller_audio():
    ser = TwilioSerializer()
    frames = [
        {"event": "media", "sequenceNumber": "2", "media": {"track": track, "payload": "/w=="}}
        for track in ("inbound", "outbound")
    ]
    assert [ser.deserialize(json.dumps(f)).track for f in frames] == ["caller", "bot"]  # type: ignore[union-attr]


def test_outbound_messages_carry_stream_sid_and_exact_fields():
    ser = TwilioSerializer()
    _started(ser)
    media = json.loads(ser.serialize(PlayAudio(b"\xff" * 160)))
    assert media == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    assert json.loads(ser.serialize(Mark("greeting"))) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "greeting"},
    }
    assert json.loads(ser.serialize(Clear())) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "malformed"),
        ('{"event": "transcription"}', "unknown_event"),
        ('{"event": "media", "sequenceNumber": "3", "media": {"payload": "***"}}', "bad_base64"),
        ('{"event": "media", "sequenceNumber": "3", "media": {}}', "bad_payload"),
        ('{"event": "dtmf", "sequenceNumber": "3", "dtmf": {"digit": "x"}}', "bad_dtmf"),
        ('{"event": "mark", "sequenceNumber": "3", "mark": {}}', "malformed"),
        (
            '{"event": "start", "sequenceNumber": "1", "streamSid": "MZ", "start": {"callSid": "CA", '
            '"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}}',
            "unsupported_media_format",
        ),
        (b"\x00\x01", "binary_frame"),
    ],
)
def test_bad_input_gets_a_named_error(raw, kind):
    with pytest.raises(ProtocolError) as err:
        TwilioSerializer().deserialize(raw)
    assert err.value.kind == kind
    assert str(err.value)
