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
    assert start.call_sid.startswith("CA") and start.stream_sid.startswith("MZ")
    assert start.custom_parameters == {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"}
    assert (start.encoding, start.sample_rate, start.channels) == ("audio/x-mulaw", 8000, 1)
    media = [e for e in events if isinstance(e, AudioIn)]
    assert media and all(len(m.payload) == 160 for m in media)
    assert [m.chunk for m in media] == list(range(1, len(media) + 1))
    assert any(isinstance(e, DtmfIn) for e in events)
    assert any(isinstance(e, MarkPlayed) for e in events)
    assert isinstance(events[-1], CallEnded)
    seqs = [getattr(e, "sequence_number", None) for e in events[1:]]
    assert seqs == sorted(seqs) and seqs[0] == 1


def test_outbound_messages_carry_stream_sid_and_exact_fields():
    ser = TwilioSerializer()
    media = json.loads(ser.serialize("MZ1", PlayAudio(b"\xff" * 160)))
    assert media == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": base64.b64encode(b"\xff" * 160).decode()},
    }
    assert json.loads(ser.serialize("MZ1", Mark("greeting"))) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "greeting"},
    }
    assert json.loads(ser.serialize("MZ1", Clear())) == {"event": "clear", "streamSid": "MZ1"}


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
