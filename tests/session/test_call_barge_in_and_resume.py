"""Barge-in and resume on virtual time: caller speech over the bot clears playback within the configured
barge-in time of its onset, a key press clears it at once, a cough does not; after "uh-huh" the cut reply
resumes exactly where it was cut, after a real answer it does not come back."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from audio import mulaw
from tests.helpers.speech import phone_recording
from tests.helpers.virtual_call import FRAME_S, MARIA, noise_burst

pytestmark = pytest.mark.looptime

WELCOME = "Thanks for calling Acme Shop."


def speech_onset_s(audio: bytes) -> float:
    """Where a recording's speech starts (first loud 20 ms frame)."""
    pcm = mulaw.decode(audio).astype(np.float32)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    return float(np.argmax(np.sqrt((frames**2).mean(axis=1)) > 500) * FRAME_S)


@pytest.mark.parametrize("barge_in_ms", [200, 400])
async def test_speech_over_playback_clears_it_within_the_barge_in_time_of_its_onset(make_harness, barge_in_ms):
    h = await make_harness()
    h.settings.audio.barge_in_ms = barge_in_ms
    call = await h.call(MARIA).start()  # a long greeting and menu
    await call.wait(2.0)
    assert call.bot_is_talking()
    said = await call.say("I want to return something", seconds=1.5)
    await call.wait_for_bot()
    record = await call.finish()

    (cleared,) = call.clears()
    assert said.first_voiced_at is not None
    # Sustained speech for barge_in_ms interrupts: the frame that completes the run sends the clear.
    assert cleared - said.first_voiced_at == pytest.approx(barge_in_ms / 1000 - FRAME_S, abs=1e-6)
    assert not call.bot_is_talking() or call.speech()[-1].start_t > cleared
    # Nothing of the greeting played after the clear: the next thing heard is the answer to the caller.
    after = [s for s in call.speech() if s.start_t >= cleared]
    assert after and after[0].text.startswith("You can return most items")
    assert [e["kind"] for e in call.events(record, "barge_in")] == ["speech"]
    assert call.events(record, "utterance")[0]["during_playback"] is True
    assert h.metric("ivr_barge_ins_total", {"kind": "speech"}) == 1


async def test_real_speech_over_playback_clears_it_within_250_ms_of_its_onset(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(2.0)
    speech = phone_recording("coqui-ai__LJ001-0013.wav")
    played = await call.play(speech, "interruption")
    await call.finish()

    (cleared,) = call.clears()
    assert played.first_sent_at is not None
    onset = played.first_sent_at + speech_onset_s(speech)
    assert 0 < cleared - onset < 0.25


async def test_a_key_press_clears_playback_at_once_and_the_cut_reply_is_not_resumed(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(3.0)
    assert call.bot_is_talking()
    pressed_at = call.loop.time()
    await call.press("4")  # returns
    await call.wait_for_bot()
    record = await call.finish()

    (cleared,) = call.clears()
    assert cleared == pressed_at
    assert [e["kind"] for e in call.events(record, "barge_in")] == ["dtmf"]
    after = call.heard_text(since=cleared)
    assert after.startswith("You can return most items") and "Maria" not in after
    assert record["turns"][0]["text"] == "4"


async def test_a_cough_over_playback_does_not_interrupt_it(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(2.0)
    await call.play(noise_burst(0.1), "cough")
    await call.wait_for_bot()
    record = await call.finish()

    assert call.clears() == []
    assert call.events(record, "barge_in") == []
    # The greeting and menu played without a gap.
    played = call.played()
    assert all(abs(b.t - a.t - FRAME_S) < 1e-6 for a, b in pairwise(played))
    assert h.asr.calls == [] and record["turns"] == []


async def test_uh_huh_resumes_the_cut_reply_exactly_where_it_was_cut(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(3.0)
    said = await call.say("uh-huh", seconds=0.6)
    await call.wait_for_bot()
    record = await call.finish()

    (cleared,) = call.clears()
    before = [s for s in call.speech() if s.end_t <= cleared + 1e-6]
    resumed = [s for s in call.speech() if s.start_t > cleared]
    cut = before[-1]
    # The text being played when the caller spoke goes on from the first frame the caller had not heard ...
    assert resumed[0].text == cut.text and resumed[0].first_index == cut.last_index + 1
    # ... and everything after it follows: the whole menu, nothing twice.
    assert resumed[-1].text.endswith("To speak to someone, press 0.")
    texts = [s.text for s in call.speech()]
    assert texts.count(cut.text) == 2 and len(texts) == len(set(texts)) + 1
    assert [e["heard"] for e in call.events(record, "resumed_after_backchannel")] == ["uh-huh"]
    assert record["turns"] == []  # "uh-huh" is not a turn
    # It resumes as soon as "uh-huh" is understood: recognition starts during the trailing pause
    # (ivr/turn_end.py), so the wait is the endpointing silence or the pause before recognition plus recognition.
    assert said.last_voiced_at is not None
    waited = resumed[0].start_t - said.last_voiced_at
    asr_s, silence_s = h.asr.delay_s, h.settings.audio.endpoint_silence_ms / 1000
    expected = max(silence_s, h.settings.turn_end.speculate_after_ms / 1000 + asr_s)
    assert expected - 1e-6 <= waited <= expected + 0.02


async def test_uh_huh_during_a_rendered_reply_resumes_its_unsynthesised_sentences_and_queued_replies(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(1.0)
    await call.press("1")  # her delivery: the status, then "anything else?"
    await call.wait_for(lambda: "is on its way" in call.heard_text(), what="the status")
    await call.wait(0.5)
    await call.say("okay", seconds=0.6)
    await call.wait_for_bot()
    record = await call.finish()

    clears = call.clears()
    assert len(clears) == 2  # the key cut the menu, "okay" cut the status
    heard = call.heard_text(since=clears[1])
    # The opening clause ("Your order of espresso machine", rendered alone so the reply starts sooner) had been
    # heard when "okay" cut in; the rest of the sentence was never synthesised and comes now.
    assert heard.startswith("is on its way and should arrive")
    assert heard.endswith("Say yes or press 1, or say no or press 2.")
    assert [e["heard"] for e in call.events(record, "resumed_after_backchannel")] == ["okay"]
    assert [t["text"] for t in record["turns"]] == ["1"]


async def test_a_real_answer_over_playback_is_answered_and_the_cut_reply_never_comes_back(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(3.0)
    await call.say("I want to return something")
    await call.wait_for_bot()
    record = await call.finish()

    (cleared,) = call.clears()
    cut_text = [s for s in call.speech() if s.end_t <= cleared + 1e-6][-1].text
    after = [s.text for s in call.speech() if s.start_t > cleared]
    assert after[0].startswith("You can return most items")
    assert cut_text not in after and WELCOME not in after
    assert call.events(record, "resumed_after_backchannel") == []
    assert record["turns"][0]["intent"] == "return_refund"


async def test_yeah_over_a_yes_no_question_answers_it_and_is_not_a_backchannel(make_harness):
    h = await make_harness()
    call = await h.call(MARIA).start()
    await call.wait(1.0)
    await call.press("1")  # her delivery: the status, then "anything else? say yes or press 1 ..."
    await call.wait_for(lambda: "anything else" in call.heard_text(), what="the yes/no question")
    await call.wait(0.5)
    await call.say("yeah", seconds=0.6)
    await call.wait_for_bot()
    record = await call.finish()

    assert call.events(record, "resumed_after_backchannel") == []
    assert [e["heard"] for e in call.events(record, "answered_over_prompt")] == ["yeah"]
    assert [t["text"] for t in record["turns"]] == ["1", "yeah"]
    after = call.heard_text(since=call.clears()[-1])
    assert "Say yes or press 1" not in after  # the question was answered, not replayed
