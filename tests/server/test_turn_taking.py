"""The real-model tier of turn-taking: real speech through the live server over a real socket, heard by Whisper
within a WER bound, and a real barge-in cutting Piper's playback. Everything else about turn-taking, barge-in,
resume, keep-alive and concurrent calls is tested on virtual time in tests/session/."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from audio import mulaw
from models.asr_text import normalize_transcript
from telephony.simcaller import Pause, PlayAudio, SimulatedCaller
from tests.helpers.speech import phone_recording, transcript

pytestmark = pytest.mark.slow

UNKNOWN = "+14155550199"  # not in the demo CRM: shorter menu, all prompts from the cache
MARIA = "+14155550100"  # in transit order: a long menu


def speech_onset_s(audio: bytes) -> float:
    """Where the recording's speech starts (first loud 20 ms frame)."""
    pcm = mulaw.decode(audio).astype(np.float32)
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames**2).mean(axis=1))
    return float(np.argmax(rms > 500) * 0.02)


async def test_real_speech_is_transcribed_within_a_wer_bound(start_server):
    name = "cmusphinx__003.wav"
    server = await start_server()
    caller = SimulatedCaller(server.ws_url, from_number=UNKNOWN)
    await caller.run([Pause(1.0), PlayAudio(phone_recording(name), name), Pause(2.5)])
    record = await server.wait_call_closed(caller.call_sid)
    heard = " ".join(t["text"] for t in record["turns"] if t["channel"] == "voice")
    wer = jiwer.wer(normalize_transcript(transcript(name)), normalize_transcript(heard))
    assert wer < 0.3, f"heard {heard!r}"


async def test_barge_in_clears_playback_within_250_ms_of_speech_onset(start_server):
    server = await start_server()
    caller = SimulatedCaller(server.ws_url, from_number=MARIA)
    speech = phone_recording("coqui-ai__LJ001-0013.wav")
    result = await caller.run([Pause(2.0), PlayAudio(speech, "interruption"), Pause(2.0)])
    await server.wait_call_closed(caller.call_sid)
    started = next(e.t for e in result.timeline if e.who == "caller" and "interruption" in e.what)
    cleared = next(e.t for e in result.timeline if e.who == "server" and e.what.startswith("clear"))
    onset = started + speech_onset_s(speech)
    assert cleared - onset < 0.25 + 0.03  # 250 ms, plus one frame of socket and scheduling slack
