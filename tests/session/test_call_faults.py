"""Faults without loss, on virtual time: a database that goes down mid-call, speech models that keep failing, a
stream that goes dead, a call that never ends, and frames built to break the decoder. In each the caller still
gets a person (or an SMS), the call ends with a reason an auditor can read, and nothing is lost."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ivr.call_limits import CallLimitsConfig
from ivr.prompts import ASR_RETRY, HOLD_LINE
from tests.helpers.faults import database_down
from tests.helpers.virtual_call import JAMES, MARIA, SILENCE_FRAME, UNKNOWN, Harness, VirtualCall

pytestmark = pytest.mark.looptime

RETURNS = "You can return most items within 30 days"


def escalations_of(h: Harness, call: VirtualCall) -> list[dict[str, Any]]:
    return [e for e in h.services.db.sync.list_escalations() if e["call_sid"] == call.call_sid]


def callbacks_of(h: Harness, call: VirtualCall) -> list[dict[str, Any]]:
    return [c for c in h.services.db.sync.list_callbacks() if c["call_sid"] == call.call_sid]


def retries(call: VirtualCall) -> int:
    """How many times the caller heard "Sorry, I missed that" (from its start)."""
    return sum(1 for s in call.speech() if s.text == ASR_RETRY and s.first_index == 0)


def errors_recorded(record: dict[str, Any]) -> list[str]:
    return [e["data"]["kind"] for e in record["events"] if e["kind"] == "error"]


# ================================================================================================ database outage
async def test_with_the_database_down_the_caller_still_reaches_the_desk_takes_the_callback_and_nothing_is_lost(
    make_harness,
):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait(1.0)
    back = database_down(h.services.db.sync)

    await call.say("I want to speak to a real person.")
    await call.wait_for(lambda: HOLD_LINE in call.heard_text(), what="the hold line")
    await call.wait(1.0)

    # The caller is on hold and waiting at the desk although nothing could be written.
    assert escalations_of(h, call) == [] and callbacks_of(h, call) == []
    desk = h.services.desk
    assert desk is not None
    waiting = [i for i in (await desk.snapshot())["items"] if i["call_sid"] == call.call_sid]
    assert len(waiting) == 1 and waiting[0]["trigger"] == "caller_request" and waiting[0]["stored"] is False
    assert h.metric("ivr_escalations_total", {"trigger": "caller_request"}) == 1
    # They take the callback offer: the text goes now.
    await call.press("1")
    await call.wait_for(lambda: call.session.ended.is_set(), what="the goodbye")
    assert [m["to"] for m in h.twilio.sms] == [JAMES]

    back()
    await call.wait(h.settings.storage.retry_s + 1.0)

    # Everything the outage held back is written, in order, with the link the caller was sent.
    (escalation,) = escalations_of(h, call)
    assert escalation["trigger"] == "caller_request" and escalation["status"] == "callback"
    (callback,) = callbacks_of(h, call)
    assert callback["status"] == "sent" and callback["token"] in h.twilio.sms[0]["body"]
    assert [i for i in (await desk.snapshot())["items"] if i["call_sid"] == call.call_sid] == []
    record = await call.finish()
    assert record["outcome"] == "callback" and record["end_reason"] == "callback_requested"
    kinds = [e["kind"] for e in record["events"]]
    assert kinds.index("start") < kinds.index("escalation") < kinds.index("end")
    assert h.error_count("storage") == 1  # the outage, counted once, not once per write


async def test_a_call_that_starts_and_ends_while_the_database_is_down_is_recorded_once_it_is_back(make_harness):
    h = await make_harness()
    back = database_down(h.services.db.sync)
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    await call.press("4")
    await call.wait_for_bot()
    await call.hang_up()
    await call.wait(0.5)
    assert call.session.ended.is_set() and h.services.sessions == {}
    assert h.metric("ivr_active_calls") == 0

    back()
    await call.wait(h.settings.storage.retry_s + 1.0)
    record = await call.finish()
    assert record["end_reason"] == "caller_hung_up" and record["ended_at"]
    assert [t["channel"] for t in record["turns"]][-1:] == ["dtmf"]


# ================================================================================================ speech models
async def test_three_utterances_in_a_row_not_recognised_hand_the_caller_to_a_person(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait(1.0)
    for n in range(3):
        await call.say("where is my order", asr_error=RuntimeError("whisper crashed"))
        if n < 2:
            await call.wait_for_bot()
    await call.wait_for(lambda: HOLD_LINE in call.heard_text(), what="the hold line")
    record = await call.finish()

    (escalation,) = escalations_of(h, call)
    assert escalation["trigger"] == "asr_failure"
    assert "speech recognition failing" in escalation["reason"].lower()
    assert retries(call) == 2
    assert errors_recorded(record).count("asr_failed") == 3
    assert record["outcome"] == "escalated"


async def test_a_recognised_utterance_between_failures_starts_the_count_again(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    for text, error in [("a", True), ("b", True), ("what is your returns policy", False), ("c", True), ("d", True)]:
        await call.say(text, asr_error=RuntimeError("whisper crashed") if error else None)
        await call.wait_for_bot()
    await call.finish()
    assert escalations_of(h, call) == []
    assert retries(call) == 4


async def test_speech_synthesis_failing_hands_the_caller_to_a_person_with_a_reason(make_harness):
    h = await make_harness()
    h.tts.fail_next(50)  # the voice model is down: only the cached prompts can still be played
    call = await h.call(MARIA).start()  # her greeting names her: it must be synthesised, and fails
    await call.wait_for(lambda: HOLD_LINE in call.heard_text(), what="the hold line")
    record = await call.finish()

    (escalation,) = escalations_of(h, call)
    assert escalation["trigger"] == "tts_failure"
    assert "speech synthesis failing" in escalation["reason"].lower()
    assert errors_recorded(record).count("tts_failed") >= 2


# ================================================================================================ call limits
async def test_a_stream_that_stops_sending_frames_is_ended_as_inactive(make_harness):
    h = await make_harness(calls=CallLimitsConfig(inactivity_timeout_s=10.0))
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    call.stream_media = False  # the line went dead without a `stop`
    stopped_at = call.loop.time()
    await call.wait_for(call.session.ended.is_set, timeout_s=30.0, what="the call to end")
    ended_after = call.loop.time() - stopped_at
    record = await call.finish()

    assert 9.9 <= ended_after <= 10.5  # 10 s after the last frame it sent
    assert record["end_reason"] == "stream_inactive"
    assert call.transport.closed is not None and h.services.sessions == {}


async def test_a_quiet_caller_on_a_live_line_is_not_ended_as_inactive(make_harness):
    h = await make_harness(calls=CallLimitsConfig(inactivity_timeout_s=5.0))
    call = await h.call(UNKNOWN).start()
    await call.wait(12.0)  # silence, but Twilio keeps sending frames
    record = await call.finish()
    assert record["end_reason"] != "stream_inactive"


async def test_a_call_that_reaches_its_maximum_length_is_ended_with_that_reason(make_harness):
    h = await make_harness(calls=CallLimitsConfig(max_call_s=20.0))
    call = await h.call(UNKNOWN).start()
    await call.wait_for(call.session.ended.is_set, timeout_s=40.0, what="the call to end")
    assert 20.0 <= call.loop.time() - call.started_at <= 20.5
    record = await call.finish()
    assert record["end_reason"] == "max_call_length"


# ================================================================================================ hostile frames
def media_with(call: VirtualCall, seq: str) -> str:
    payload = base64.b64encode(SILENCE_FRAME).decode()
    return (
        f'{{"event": "media", "sequenceNumber": {seq}, "streamSid": "{call.stream_sid}", '
        f'"media": {{"track": "inbound", "payload": "{payload}"}}}}'
    )


HOSTILE = {
    "deep nesting": lambda call: '{"event": "media", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "deep object": lambda call: "{" + '"a": {' * 5_000 + "}" * 5_000 + "}",
    "1e999": lambda call: media_with(call, "1e999"),
    "5,000-digit integer": lambda call: media_with(call, "9" * 5_000),
    "5,000-digit string": lambda call: media_with(call, '"' + "9" * 5_000 + '"'),
    "NaN": lambda call: media_with(call, "NaN"),
    "-Infinity": lambda call: media_with(call, "-Infinity"),
    "float sequence": lambda call: media_with(call, "3.5"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_frame_is_a_counted_protocol_error_and_the_call_goes_on(make_harness, name):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.send(HOSTILE[name](call))
    await call.wait(0.5)
    assert not call.session.ended.is_set()
    await call.press("4")
    await call.wait_for_bot()
    record = await call.finish()

    assert RETURNS in call.heard_text()
    assert record["end_reason"] == "caller_hung_up"
    kinds = errors_recorded(record)
    assert len(kinds) == 1 and kinds[0] in ("invalid_json", "malformed")
    assert h.error_count(kinds[0]) == 1


async def test_one_wild_sequence_number_does_not_mute_the_rest_of_the_call(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.send(media_with(call, f'"{call.codec.sequence_number + 10**9}"'))
    await call.wait(0.5)
    await call.press("4")
    await call.wait_for_bot()
    record = await call.finish()

    assert RETURNS in call.heard_text()
    assert errors_recorded(record) == ["sequence_jump"]


async def test_a_stream_that_renumbers_its_frames_is_followed_after_a_few_frames(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    call.codec.sequence_number = 7_000_000  # the carrier renumbered the stream
    await call.wait(0.5)
    await call.press("4")
    await call.wait_for_bot()
    record = await call.finish()

    assert RETURNS in call.heard_text()
    assert errors_recorded(record) == ["sequence_jump"]
    (resync,) = [e["data"] for e in record["events"] if e["kind"] == "sequence_resync"]
    assert resync["to"] > 7_000_000
