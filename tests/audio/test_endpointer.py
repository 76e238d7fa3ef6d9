"""The endpointer on real recordings routed through 8 kHz mu-law and webrtcvad, as a live call would feed it."""

import numpy as np
import pytest

from audio.endpoint import Endpointer, EndpointerConfig, SpeechDiscarded, SpeechEnded, SpeechStarted
from audio.loudness import dbfs
from tests.helpers.speech import frames_of, phone_pcm, silence, vad_flags

FRAME_MS = 20


def run(pcm: np.ndarray, config: EndpointerConfig | None = None) -> list[tuple[int, object]]:
    """Feed a call's audio frame by frame; returns (frame pushed when the event came out, event)."""
    ep = Endpointer(config or EndpointerConfig())
    out = []
    for i, (frame, voiced) in enumerate(zip(frames_of(pcm), vad_flags(pcm), strict=True)):
        out += [(i, e) for e in ep.push(frame, bool(voiced))]
    return out


def speech_bounds(pcm: np.ndarray) -> tuple[int, int]:
    """Reference speech boundaries (frame indices) from energy alone: frames within 25 dB of the loud ones."""
    levels = np.array([dbfs(f) for f in frames_of(pcm)])
    active = np.nonzero(levels > np.percentile(levels, 90) - 25)[0]
    return int(active[0]), int(active[-1])


@pytest.mark.parametrize("name", ["coqui-ai__LJ001-0013", "lhotse-speech__LJ002-0020"])
def test_one_recording_padded_with_silence_is_one_utterance_at_the_right_place(speech_dir, name):
    speech = phone_pcm(name)
    lead = 50  # frames of silence before the speech
    call = np.concatenate([silence(1.0), speech, silence(2.0)])
    true_start, true_end = (lead + b for b in speech_bounds(speech))

    events = run(call)
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, SpeechEnded]
    (_, started), (ended_at, ended) = events
    assert abs(started.frame_index - true_start) * FRAME_MS <= 100
    assert abs(ended.frame_index - true_end) * FRAME_MS <= 200
    assert ended.reason == "silence"
    # It ends exactly when the configured silence has passed: not earlier (cutting the caller off), not later.
    assert (ended_at - ended.frame_index) * FRAME_MS == 500
    # The audio holds the whole utterance plus pre-roll, and not the 2 s of silence after it.
    span = (ended.frame_index - started.frame_index + 1) * 160
    assert span + 10 * 160 <= len(ended.audio) <= span + 20 * 160
    assert ended.audio.dtype == np.int16
    assert abs(ended.duration_s - (true_end - true_start) * FRAME_MS / 1000) < 0.3
    assert ended.voiced_ms >= 0.7 * ended.duration_s * 1000
    # The utterance's audio is the recording itself (pre-roll of silence in front).
    onset = started.frame_index - 10
    np.testing.assert_array_equal(ended.audio, call[onset * 160 : onset * 160 + len(ended.audio)])


def test_longer_silence_setting_waits_longer(speech_dir):
    call = np.concatenate([silence(0.5), phone_pcm("coqui-ai__LJ001-0013"), silence(2.0)])
    (_, _), (ended_at, ended) = run(call, EndpointerConfig(silence_ms=1000))
    assert (ended_at - ended.frame_index) * FRAME_MS == 1000


def test_two_recordings_with_a_pause_are_two_utterances(speech_dir):
    first, second = phone_pcm("coqui-ai__LJ001-0013"), phone_pcm("lhotse-speech__LJ002-0020")
    call = np.concatenate([silence(0.5), first, silence(1.5), second, silence(1.0)])
    events = [e for _, e in run(call)]
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, SpeechStarted, SpeechEnded]
    second_onset = (len(silence(0.5)) + len(first) + len(silence(1.5))) // 160
    assert abs(events[2].frame_index - (second_onset + speech_bounds(second)[0])) * FRAME_MS <= 100
    assert events[1].duration_s > events[3].duration_s  # 2.6 s sentence, then 1.5 s phrase


def test_a_60ms_burst_is_discarded_not_transcribed(speech_dir):
    speech = phone_pcm("coqui-ai__LJ001-0013")
    burst = speech[40 * 160 : 43 * 160]  # 60 ms of a real vowel: a caller's cough or a line pop
    events = [e for _, e in run(np.concatenate([silence(0.5), burst, silence(1.5)]))]
    assert [type(e) for e in events] == [SpeechStarted, SpeechDiscarded]
    assert events[1].voiced_ms < 200


def test_single_unvoiced_frames_inside_a_start_run_are_tolerated_but_two_are_not():
    frame = np.full(160, 1000, dtype=np.int16)
    ep = Endpointer()
    pattern = [True, False, True, False, True]  # 60 ms voiced with flicker: speech
    events = [e for v in pattern for e in ep.push(frame, v)]
    assert events == [SpeechStarted(frame_index=0)]

    ep = Endpointer()
    pattern = [True, True, False, False, True, False, False, True]  # never 60 ms without a 40 ms gap
    assert [e for v in pattern for e in ep.push(frame, v)] == []
    assert not ep.in_speech


def test_max_length_cuts_a_monologue_and_keeps_listening():
    frame = np.full(160, 1000, dtype=np.int16)
    ep = Endpointer(EndpointerConfig(max_utterance_s=1.0))
    events = [e for _ in range(120) for e in ep.push(frame, True)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert ended and ended[0].reason == "max_length"
    assert len(ended[0].audio) == 50 * 160  # 1 s, no pre-roll available at the very start of the call
    assert ep.in_speech  # the caller is still talking: a new utterance is under way
    assert ep.voiced_run_ms == 120 * FRAME_MS  # barge-in sees one continuous run


def test_voiced_run_tracks_sustained_speech_for_barge_in(speech_dir):
    speech = phone_pcm("coqui-ai__LJ001-0013")
    call = np.concatenate([silence(0.5), speech, silence(1.0)])
    ep = Endpointer()
    runs = [(ep.push(f, bool(v)), ep.voiced_run_ms)[1] for f, v in zip(frames_of(call), vad_flags(call), strict=True)]
    assert runs[20] == 0
    assert max(runs) >= 200  # a real sentence holds 200 ms of speech: enough to interrupt the bot
    assert runs[-1] == 0
    ep.reset()
    assert ep.voiced_run_ms == 0 and not ep.in_speech


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        EndpointerConfig(frame_ms=0)
    with pytest.raises(ValueError):
        EndpointerConfig(silence_ms=0)


def _feed_until_pause(ep: Endpointer, pcm: np.ndarray, pause_ms: int) -> list[object]:
    """Pushes the recording, then silence until `pause_ms` of trailing pause; returns the events."""
    events: list[object] = []
    for frame, voiced in zip(frames_of(pcm), vad_flags(pcm), strict=True):
        events += ep.push(frame, bool(voiced))
    quiet = np.zeros(160, dtype=np.int16)
    while ep.in_speech and ep.trailing_silence_ms < pause_ms:
        events += ep.push(quiet, False)
    return events


def test_hooks_for_a_turn_end_policy_end_sooner_or_later_than_the_silence(speech_dir):
    speech = np.concatenate([silence(0.5), phone_pcm("coqui-ai__LJ001-0013")])
    config = EndpointerConfig(silence_ms=400)

    # What the utterance would be if it ended now is exactly what ending it now gives.
    ep = Endpointer(config)
    _feed_until_pause(ep, speech, 200)
    assert ep.will_be_utterance and ep.trailing_silence_ms >= 200
    so_far = ep.utterance_so_far()
    ended = ep.end_now()
    assert isinstance(ended, SpeechEnded) and ended.reason == "turn_end"
    assert np.array_equal(ended.audio, so_far)
    assert ep.end_now() is None and not ep.in_speech

    # Asked to wait longer, the endpointer lets a 600 ms pause pass; new speech restores the usual silence.
    ep = Endpointer(config)
    _feed_until_pause(ep, speech, 120)
    ep.wait_for_silence(900)
    assert _feed_until_pause(ep, np.zeros(0, dtype=np.int16), 600) == [] and ep.in_speech
    ep.wait_for_silence(None)
    events = _feed_until_pause(ep, np.zeros(0, dtype=np.int16), 1000)
    assert [type(e) for e in events] == [SpeechEnded] and not ep.in_speech


def test_a_policy_cannot_cut_short_the_pause_a_step_waits_for(speech_dir):
    # A step reading an order number waits 1.5 s between digit groups; "a number is being read" (600 ms) must not
    # end that caller's turn after the first group.
    speech = np.concatenate([silence(0.5), phone_pcm("coqui-ai__LJ001-0013")])
    ep = Endpointer(EndpointerConfig(silence_ms=400))
    ep.set_silence_ms(1500)
    _feed_until_pause(ep, speech, 120)
    ep.wait_for_silence(600)
    assert _feed_until_pause(ep, np.zeros(0, dtype=np.int16), 1400) == [] and ep.in_speech
    events = _feed_until_pause(ep, np.zeros(0, dtype=np.int16), 1600)
    assert [type(e) for e in events] == [SpeechEnded]
