"""Turn-taking on virtual time: the bot answers once the caller's utterance has ended, every turn's latency
breakdown is stored and adds up to what the caller waited, outbound audio is paced, keep-alive prompts follow
a long silence, and one call's slow ASR never stalls another call's audio."""

from __future__ import annotations

import asyncio
import statistics
from itertools import pairwise

import pytest

from telephony.events import Mark, PlayAudio
from tests.helpers.speech import phone_recording
from tests.helpers.virtual_call import FRAME, JAMES, MARIA, UNKNOWN, FakeAsr

pytestmark = pytest.mark.looptime

RETURNS = "You can return most items within 30 days"
RECORDING = "coqui-ai__LJ001-0013.wav"  # about 2.6 s of real speech


async def test_reply_starts_after_the_end_of_the_utterance_and_the_turn_records_its_latency(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait_for_bot()
    said = await call.say("I'd like to return something")
    reply_at = await call.wait_for_bot()
    record = await call.finish()

    (turn,) = record["turns"]
    assert (turn["channel"], turn["text"], turn["intent"]) == ("voice", "I'd like to return something", "return_refund")
    assert turn["reply"].startswith(RETURNS)
    assert RETURNS in call.heard_text(since=said.last_voiced_at)
    latency = turn["latency"]
    silence_ms = h.settings.audio.endpoint_silence_ms
    # The endpointer waits for endpoint_silence_ms of silence after the last voiced frame (20 ms frames).
    assert silence_ms <= latency["endpoint_wait"] <= silence_ms + 20
    # Recognition started during the trailing pause (ivr/turn_end.py): the caller waits only for what is left.
    head_start_ms = silence_ms - h.settings.turn_end.speculate_after_ms
    assert latency["asr"] == pytest.approx(max(0.0, h.asr.delay_s * 1000 - head_start_ms), abs=0.2)
    assert len(h.asr.calls) == 1  # the speculative transcript is the turn's transcript, not a second pass
    assert latency["tts_first_frame"] == 0.0  # a cached prompt
    total = latency["endpoint_wait"] + latency["asr"] + latency["understanding"] + latency["tts_first_frame"]
    assert latency["total"] == pytest.approx(total, abs=0.2)
    # What the caller waited is what was stored: from the last voiced frame to the reply's first frame.
    assert (reply_at - said.last_voiced_at) * 1000 == pytest.approx(latency["total"], abs=0.2)
    # Nothing was said to the caller while they spoke or while the turn was being understood.
    assert not [t for t in call.media_times() if said.first_sent_at <= t < reply_at]
    turn_latency = [e for e in call.events(record, "turn_latency")]
    assert turn_latency == [latency]
    assert h.metric("ivr_turn_latency_seconds_count", {"stage": "total"}) == 1


async def test_a_rendered_reply_after_a_key_entry_records_the_synthesis_time(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait_for_bot()
    await call.press("2")  # track an order: "Please say your order number, or type the digits ..."
    await call.wait_for_bot()
    await call.press("20010#")
    pressed_at = call.loop.time() - 0.15
    reply_at = await call.wait_for_bot()
    record = await call.finish()

    entry = record["turns"][1]
    assert (entry["channel"], entry["text"]) == ("dtmf", "20010")
    assert entry["reply"].startswith("I heard 2 0 0 1 0, is that right?")
    latency = entry["latency"]
    assert latency["tts_first_frame"] == h.tts.render_delay_s * 1000  # not cached: rendered sentence by sentence
    assert "asr" not in latency and "endpoint_wait" not in latency
    assert (reply_at - pressed_at) * 1000 == pytest.approx(latency["total"], abs=0.2)
    # The reply's first piece was asked for as needed now; each later one as needed once the audio queued
    # ahead of it has played (so other calls' first words may go before it: models/tts.py).
    due = dict(zip(h.tts.rendered, h.tts.due_in_s, strict=True))
    assert due["I heard 2 0 0 1 0, is that right?"] == 0.0
    assert due["Say yes or press 1, or say no or press 2."] > 1.0  # "I heard ..." is queued ahead of it


async def test_a_templated_reply_starts_with_its_fixed_words_from_the_cache_and_renders_the_rest_meanwhile(
    make_harness,
):
    # Maria's greeting: "Thanks for calling Acme Shop." and "Good to hear from you again," (the fixed words before
    # her name) were rendered before the call; only "Maria." is rendered, while they play, with no gap.
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait_for_bot()
    await call.finish()

    first, lead_in, name = call.speech()[:3]
    greeting = ("Thanks for calling Acme Shop.", "Good to hear from you again,", "Maria.")
    assert (first.text, lead_in.text, name.text) == greeting
    assert first.start_t - call.started_at < 0.1  # nothing rendered before the first word
    assert lead_in.start_t == pytest.approx(first.end_t, abs=1e-6)
    assert name.start_t == pytest.approx(lead_in.end_t, abs=1e-6)
    assert "Maria." in h.tts.rendered
    assert not {"Thanks for calling Acme Shop.", "Good to hear from you again,"} & set(h.tts.rendered)


async def test_a_real_recording_is_endpointed_once_by_silence_and_its_words_make_the_turn(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait_for_bot()
    h.asr.will_hear("I want to return my running shoes")  # what Whisper would make of the recording
    played = await call.play(phone_recording(RECORDING), "LJ001-0013")
    await call.wait_for_bot()
    record = await call.finish()

    (utterance,) = call.events(record, "utterance")
    assert utterance["reason"] == "silence" and utterance["duration_s"] > 1.5
    assert utterance["during_playback"] is False
    (asr_call,) = h.asr.calls
    # The utterance handed to ASR is the speech plus at most 200 ms of pre-roll and of trailing silence.
    assert played.first_voiced_at is not None and played.last_voiced_at is not None
    spoken = played.last_voiced_at - played.first_voiced_at
    assert spoken <= asr_call.audio_s <= spoken + 0.5
    assert record["turns"][0]["text"] == "I want to return my running shoes"


async def test_outbound_audio_is_whole_frames_in_chunks_paced_at_real_time_with_marks_echoed(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()  # a long greeting and menu
    await call.wait_for_bot()
    await call.finish()

    media = call.sent_commands(PlayAudio)
    chunk, lead = h.settings.audio.outbound_chunk_ms / 1000, h.settings.audio.outbound_lead_ms / 1000
    sizes = [len(s.command.payload) for s in media]
    assert media and all(n % FRAME == 0 and 0 < n <= FRAME * chunk / 0.020 for n in sizes)
    assert statistics.median(sizes) == FRAME * chunk / 0.020  # a chunk a message, not a frame
    assert all(call.codec.parse(s.raw) == s.command for s in call.transport.sent)  # our stream, Twilio's format
    times = [s.t for s in media]
    assert statistics.median(b - a for a, b in pairwise(times)) == pytest.approx(chunk, abs=1e-6)
    sent_at = [s.t for s in media for _ in range(len(s.command.payload) // FRAME)]  # each frame's message
    assert len(sent_at) == len(call.heard_frames)
    for frame, sent in zip(call.heard_frames, sent_at, strict=True):  # never more than the lead ahead of playback
        assert 0.0 <= frame.t - sent <= lead + 1e-6
    marks = call.sent_commands(Mark)
    assert marks and all(m.command.name for m in marks)
    first_mark = call.transport.sent.index(marks[0])
    assert all(isinstance(s.command, PlayAudio) for s in call.transport.sent[:first_mark])
    assert h.metric("ivr_frames_out_total") == len(sent_at)


async def test_long_silence_gets_a_keep_alive_prompt_after_the_bot_has_finished(make_harness):
    h = await make_harness()
    h.settings.audio.long_silence_s = 2.0
    call = await h.call(UNKNOWN).start()
    greeting_at = await call.wait_for_bot(quiet_s=0.1)
    greeting_end = call.speech()[-1].end_t
    assert greeting_end - greeting_at > 2.0  # the bot's own talking is not the caller's silence
    prompt_at = await call.wait_for_bot(quiet_s=0.1)
    record = await call.finish()

    # Counted from the last frame heard while the bot still played.
    assert 2.0 - 0.02 <= prompt_at - greeting_end <= 2.0 + 0.02
    assert call.heard_text(since=prompt_at).startswith(h.services.flow.prompt_text("_no_input"))
    assert record["outcome"] == "silent"


async def test_hang_up_mid_greeting_ends_the_session_and_closes_the_record(make_harness):
    h = await make_harness()
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    record = await call.finish()

    assert call.session.ended.is_set() and call.session.end_reason == "caller_hung_up"
    assert record["end_reason"] == "caller_hung_up" and record["ended_at"]
    assert record["outcome"] == "silent"  # a caller who never spoke is not a resolved call
    assert call.call_sid not in h.services.sessions
    assert [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith(call.call_sid)] == []
    assert call.transport.closed is not None and call.transport.closed[1] == 1000
    assert h.metric("ivr_active_calls") == 0


async def test_a_second_calls_audio_keeps_flowing_while_the_first_calls_asr_runs(make_harness):
    h = await make_harness(asr=FakeAsr(delay_s=5.0))  # a slow recognition
    talker = await h.call(UNKNOWN).start()
    await talker.wait_for_bot()
    await talker.say("I'd like to return something")
    await talker.wait_for(lambda: bool(h.asr.calls), what="ASR to start")
    listener = await h.call(UNKNOWN).start()
    greeting_at = await listener.wait_for_bot()
    await talker.wait_for_bot()
    talk_record = await talker.finish()
    await listener.finish()

    asr_started = h.asr.calls[0].at
    assert asr_started <= greeting_at < asr_started + 5.0  # the listener's greeting played while the ASR ran
    times = [t for t in listener.media_times() if greeting_at <= t <= asr_started + 5.0]
    # Never starved: after the lead, one chunk a chunk's time for the whole time the other call's ASR ran.
    chunk = h.settings.audio.outbound_chunk_ms / 1000
    assert len(times) > 4.0 / chunk and max(b - a for a, b in pairwise(times)) <= chunk + 1e-6
    # Started during the trailing pause: the turn waited the recognition time less the rest of the pause.
    head_start_ms = h.settings.audio.endpoint_silence_ms - h.settings.turn_end.speculate_after_ms
    assert talk_record["turns"][0]["latency"]["asr"] == pytest.approx(5000.0 - head_start_ms, abs=0.2)
