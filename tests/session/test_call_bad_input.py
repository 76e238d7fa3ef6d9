"""Bad input on virtual time: whatever the carrier sends, each problem is logged with the call id, counted and
recorded once, and the call goes on (or, for a stream we cannot decode, ends cleanly). Model failures are the
caller's problem only as far as "Sorry, I missed that"."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from ivr.prompts import ASR_RETRY
from tests.helpers.virtual_call import JAMES, SILENCE_FRAME, UNKNOWN, Harness, VirtualCall

pytestmark = pytest.mark.looptime

RETURNS = "You can return most items within 30 days"


def media(call: VirtualCall, seq: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": call.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": "1",
                "timestamp": "20",
                "payload": base64.b64encode(SILENCE_FRAME).decode(),
            },
        }
    )


def errors_recorded(record: dict) -> list[str]:
    return [e["data"]["kind"] for e in record["events"] if e["kind"] == "error"]


def logged(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if kind in r.getMessage()]


BAD_MESSAGES = {
    "unknown_event": lambda call: json.dumps(
        {"event": "transcription", "sequenceNumber": "3", "streamSid": call.stream_sid}
    ),
    "invalid_json": lambda call: '{"event": "media", "sequenceNumber": ',
    "bad_base64": lambda call: json.dumps(
        {"event": "media", "sequenceNumber": "3", "streamSid": call.stream_sid, "media": {"payload": "!!notbase64!!"}}
    ),
    "binary_frame": lambda call: b"\x00\x01\x02",
    "out_of_order": lambda call: media(call, call.codec.sequence_number - 1),  # a replayed, stale frame
}


@pytest.mark.parametrize("kind", list(BAD_MESSAGES))
async def test_a_bad_message_is_logged_counted_and_recorded_once_and_the_call_goes_on(make_harness, caplog, kind):
    caplog.set_level(logging.WARNING, logger="ivr.session")
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.send(BAD_MESSAGES[kind](call))
    await call.wait(0.5)
    await call.press("4")  # the call still works: a key is answered
    await call.wait_for_bot()
    record = await call.finish()

    assert h.error_count(kind) == 1
    assert errors_recorded(record) == [kind]
    assert logged(caplog, kind) and getattr(logged(caplog, kind)[0], "call_sid", None) == call.call_sid
    assert call.heard_text().endswith(call.heard_text(since=call.speech()[-1].start_t))
    assert RETURNS in call.heard_text()
    assert record["end_reason"] == "caller_hung_up" and record["ended_at"]


async def test_a_gap_in_sequence_numbers_is_counted_but_the_frame_is_used(make_harness, caplog):
    caplog.set_level(logging.WARNING, logger="ivr.session")
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.codec.sequence_number += 5  # Twilio lost five frames
    await call.wait(0.5)
    await call.press("4")
    await call.wait_for_bot()
    record = await call.finish()

    assert h.error_count("sequence_gap") == 1 and h.error_count("out_of_order") == 0
    assert errors_recorded(record) == ["sequence_gap"]
    assert "jumped from" in logged(caplog, "sequence_gap")[0].getMessage()
    assert RETURNS in call.heard_text()


async def test_media_keys_and_marks_before_start_are_dropped_and_counted(make_harness):
    h = await make_harness()
    call = h.call(UNKNOWN)
    call.send(media(call, 1))
    call.send(call.codec.dtmf("1"))
    call.send(call.codec.mark("say#0:1"))
    call.codec.sequence_number = 0  # the stream starts afresh
    await call.start()
    await call.wait(1.0)
    record = await call.finish()

    assert (h.error_count("media_before_start"), h.error_count("dtmf_before_start")) == (1, 1)
    assert h.error_count("mark_before_start") == 1
    assert errors_recorded(record) == []  # nothing is stored before the stream is accepted
    assert record["outcome"] == "silent" and record["turns"] == []


async def test_an_unsupported_media_format_ends_the_stream_with_a_clear_error(make_harness, caplog):
    caplog.set_level(logging.WARNING, logger="ivr.session")
    h = await make_harness()
    call = h.call(UNKNOWN)
    await call.session.on_message(call.codec.start(call.params, media_format=("audio/x-l16", 16000, 1)))

    assert call.session.ended.is_set() and call.transport.closed is not None
    assert call.transport.sent == []
    assert h.error_count("unsupported_media_format") == 1
    (line,) = logged(caplog, "unsupported_media_format")
    assert "expected audio/x-mulaw 8000 Hz mono" in line.getMessage()
    assert h.services.sessions == {}
    assert await h.services.db.list_calls() == []


async def test_a_second_start_on_one_stream_is_ignored_and_counted(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.send(call.codec.start({"From": JAMES, "CallSid": call.call_sid}))
    await call.wait(0.5)
    record = await call.finish()

    assert h.error_count("duplicate_start") == 1
    assert errors_recorded(record) == ["duplicate_start"]
    assert record["caller"] == UNKNOWN  # the first start holds
    assert len(await h.services.db.list_calls()) == 1


async def test_stop_before_start_ends_the_stream_without_a_record(make_harness):
    h = await make_harness()
    call = h.call(UNKNOWN)
    await call.session.on_message(call.codec.stop())

    assert call.session.ended.is_set() and call.session.end_reason == "stop_before_start"
    assert call.transport.closed is not None and call.transport.sent == []
    assert await h.services.db.list_calls() == []


async def _two_utterances(h: Harness, **first: object) -> tuple[VirtualCall, dict]:
    call = await h.call(UNKNOWN).start()
    await call.wait_for_bot()
    await call.say("I'd like to return something", **first)  # type: ignore[arg-type]
    await call.wait_for_bot()
    await call.say("I'd like to return something")
    await call.wait_for_bot()
    return call, await call.finish()


@pytest.mark.parametrize(
    ("failure", "kind"),
    [({"asr_error": RuntimeError("CUDA out of memory")}, "asr_failed"), ({"overloaded": True}, "asr_overloaded")],
    ids=["asr_failed", "asr_overloaded"],
)
async def test_a_failed_transcription_says_sorry_i_missed_that_and_the_call_goes_on(
    make_harness, caplog, failure, kind
):
    caplog.set_level(logging.WARNING, logger="ivr.session")
    h = await make_harness()
    call, record = await _two_utterances(h, **failure)

    said = [s.text for s in call.speech()]
    retry = said.index(ASR_RETRY)
    assert said[retry + 1].startswith(RETURNS)  # the second attempt is answered
    assert h.error_count(kind) == 1 and errors_recorded(record) == [kind]
    assert logged(caplog, kind) and getattr(logged(caplog, kind)[0], "call_sid", None) == call.call_sid
    assert [t["text"] for t in record["turns"]] == ["I'd like to return something"]


async def test_a_tts_failure_is_logged_and_counted_and_the_call_goes_on(make_harness, caplog):
    caplog.set_level(logging.WARNING, logger="ivr.session")
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait_for_bot()
    await call.press("2")
    await call.wait_for_bot()
    h.tts.fail_next()
    await call.press("20010#")  # "I heard 2 0 0 1 0, is that right?" is rendered: the voice model crashes
    failed_at = call.loop.time()
    await call.wait(3.0)
    assert call.heard_text(since=failed_at - 1.0) == ""  # that reply is lost ...
    await call.press("1")  # ... the caller says yes anyway, and the call goes on
    await call.wait_for_bot()
    record = await call.finish()

    assert h.error_count("tts_failed") == 1 and errors_recorded(record) == ["tts_failed"]
    assert "piper crashed" in logged(caplog, "tts_failed")[0].getMessage()
    assert call.heard_text(since=failed_at).startswith("One moment while I look that up.")
    assert [t["text"] for t in record["turns"]] == ["2", "20010", "1"]
    assert record["end_reason"] == "caller_hung_up"
