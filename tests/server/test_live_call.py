"""A real call through the real server over a real socket: endpointing, pacing, marks, clear, teardown."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from telephony import events
from telephony.simcaller import Pause, PlayAudio, SimulatedCaller, WaitForBot
from tests.helpers.speech import phone_recording

pytestmark = pytest.mark.slow

RECORDING = "coqui-ai__LJ001-0013.wav"  # about 2.6 s of real speech


async def test_recorded_utterance_is_endpointed_and_answered_with_paced_frames_and_marks(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url, from_number="+14155550101")
    result = await caller.run(
        [WaitForBot(timeout_s=30), PlayAudio(phone_recording(RECORDING), "LJ001-0013"), WaitForBot(timeout_s=20)]
    )
    record = await server.wait_call_closed(caller.call_sid)

    utterances = [e for e in record["events"] if e["kind"] == "utterance"]
    assert len(utterances) >= 1
    # The endpointer found the recording's speech: most of its ~2.6 s, ended by silence, not by the length cap.
    assert max(u["data"]["duration_s"] for u in utterances) > 1.5
    assert all(u["data"]["reason"] == "silence" for u in utterances)
    assert record["turns"] and record["turns"][0]["text"]

    media = [m for m in result.received_commands if isinstance(m, events.PlayAudio)]
    assert media, "the bot never answered"
    # Every frame parsed as Twilio would take it, and named this call's stream.
    assert result.protocol_errors == []
    assert {len(m.payload) for m in media} == {160}
    marks = [m for m in result.received_commands if isinstance(m, events.Mark)]
    assert marks and all(m.name for m in marks)
    assert set(result.marks_echoed) >= {m.name for m in marks[:1]}

    # Real-time pace: over the greeting, frames arrive at ~50/s, never more than the lead ahead.
    first = result.segments[0]
    arrivals = [t for t in result.frame_arrivals if first.start_t <= t <= first.end_t]
    span = arrivals[-1] - arrivals[0]
    expected = (len(arrivals) - 1) * 0.020
    assert expected - 0.25 <= span <= expected + 0.5
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert statistics.median(gaps) == pytest.approx(0.020, abs=0.006)


async def test_caller_speech_during_playback_clears_it_within_a_frame(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url, from_number="+14155550100")  # a known customer: long menu
    speech = phone_recording(RECORDING)
    result = await caller.run([Pause(1.5), PlayAudio(speech, "barge-in"), WaitForBot(timeout_s=20)])
    await server.wait_call_closed(caller.call_sid)

    clears = [i for i, m in enumerate(result.received_commands) if isinstance(m, events.Clear)]
    assert clears, "speaking over the bot did not interrupt it"
    # After the clear, nothing of the old prompt follows: the next media is a new reply, after a gap.
    i = clears[0]
    later_media = [m for m in result.received_commands[i + 1 :] if isinstance(m, events.PlayAudio)]
    assert result.clears >= 1
    interrupt = [e for e in result.timeline if e.who == "server" and e.what.startswith("clear")][0]
    caller_started = [e for e in result.timeline if e.who == "caller" and "barge-in" in e.what][0]
    # 200 ms of sustained speech triggers the barge-in; allow the frame path and scheduling some slack.
    assert interrupt.t - caller_started.t < 0.6
    assert later_media == [] or len(result.segments) >= 2


async def test_hang_up_ends_the_session_and_closes_the_record_within_a_second(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url)
    task = asyncio.create_task(caller.run([Pause(1.0)]))  # hangs up (stop) after one second mid-greeting
    await task
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    while caller.call_sid in server.services.sessions and loop.time() - stopped_at < 2:
        await asyncio.sleep(0.01)
    assert loop.time() - stopped_at < 1.0
    record = await server.wait_call_closed(caller.call_sid)
    assert record["end_reason"] == "caller_hung_up"
    assert record["outcome"] == "silent"  # a caller who never spoke is not a resolved call
    active = [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith(caller.call_sid)]
    assert active == []
