"""Both ASR paths on real recordings heard through an 8 kHz mu-law phone line."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from models.asr import FAST_MAX_S
from models.asr_text import normalize_transcript

pytestmark = pytest.mark.slow

RECORDINGS = [
    "cmusphinx__005.wav",  # "eight of spades four of clubs seven of hearts", 3.5 s
    "cmusphinx__sense_and_sensibility_01_austen_64kb-0930.wav",  # 3.3 s
    "coqui-ai__LJ001-0011.wav",  # 4.5 s
]
# Phrases of one or two seconds: decoded on their real frames alone, Whisper repeats them until the token limit.
LOOP_PRONE = ["cmusphinx__001.wav", "lhotse-speech__LJ002-0020.wav", "cmusphinx__003.wav"]


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize_transcript(reference), normalize_transcript(hypothesis) or "<empty>"))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "padded"])
@pytest.mark.parametrize("name", RECORDINGS)
def test_phone_recording_is_understood(asr_transcriber, phone_recording, name, fast):
    audio, reference = phone_recording(name)
    result = asr_transcriber.transcribe(audio, fast=fast)
    assert wer(reference, result.text) < 0.25, (result.text, reference)
    assert result.language == "en"
    assert result.confidence > 0.3
    assert result.audio_s == pytest.approx(len(audio) / 16000)
    if not fast:
        assert result.path == "padded"


@pytest.mark.parametrize("name", LOOP_PRONE)
def test_fast_path_says_a_short_phrase_once(asr_transcriber, phone_recording, name):
    audio, reference = phone_recording(name)
    result = asr_transcriber.transcribe(audio, fast=True)
    words = normalize_transcript(result.text).split()
    assert 0 < len(words) <= len(normalize_transcript(reference).split()) + 2, result.text
    assert wer(reference, result.text) <= 0.5, (result.text, reference)
    # Without redoing it on the padded path, four times the work ("10 of clubs. 10 of clubs. 10 of" is said once).
    assert result.path == "fast"


@pytest.mark.parametrize(
    ("text", "audio_s", "once"),
    [
        ("10 of clubs. 10 of clubs. 10 of", 1.1, "10 of clubs."),
        ("Yes. Yes. Yes.", 0.6, "Yes."),
        ("10 of clubs. 10 of spades.", 1.1, None),  # two different sentences: not a loop of one
        ("10 of clubs.", 1.1, None),  # nothing repeated
        ("I want to return my shoes. I want to", 1.1, None),  # more words than 1.1 s holds
        ("and then and then and then", 1.5, None),  # no sentence to keep
    ],
)
def test_a_short_phrase_the_decoder_repeats_is_kept_once(text, audio_s, once):
    from models.asr import _said_once

    assert _said_once(text, audio_s) == once


def test_fast_and_padded_agree_on_a_short_phrase(asr_transcriber, phone_recording):
    audio, _ = phone_recording("cmusphinx__sense_and_sensibility_01_austen_64kb-0930.wav")
    fast = asr_transcriber.transcribe(audio, fast=True)
    padded = asr_transcriber.transcribe(audio, fast=False)
    assert fast.path == "fast"
    assert normalize_transcript(fast.text) == normalize_transcript(padded.text)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "padded"])
def test_silence_is_not_words(asr_transcriber, fast):
    rng = np.random.default_rng(7)
    line_hiss = (rng.standard_normal(2 * 16000) * 1e-4).astype(np.float32)
    result = asr_transcriber.transcribe(line_hiss, fast=fast)
    assert len(normalize_transcript(result.text).split()) <= 1, result.text
    assert result.confidence < 0.5


def test_long_utterance_takes_the_padded_path(asr_transcriber, phone_recording):
    audio, reference = phone_recording("joinly-ai__OSR_us_000_0034_8k.wav")  # 35 s, ten sentences
    assert len(audio) / 16000 > FAST_MAX_S
    result = asr_transcriber.transcribe(audio, fast=True)
    assert result.path == "padded"
    assert wer(reference, result.text) < 0.2


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((2, 16000), dtype=np.float32), ValueError),
        (np.zeros(0, dtype=np.float32), ValueError),
        (np.zeros(16000, dtype=np.int16), TypeError),
        (np.full(16000, np.nan, dtype=np.float32), ValueError),
    ],
    ids=["stereo", "empty", "int16", "nan"],
)
def test_bad_audio_gets_a_clear_error(asr_transcriber, bad, error):
    with pytest.raises(error):
        asr_transcriber.transcribe(bad)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "padded"])
def test_a_vocabulary_prompt_keeps_recognition_and_is_not_echoed(asr_transcriber, phone_recording, fast):
    audio, reference = phone_recording("cmusphinx__005.wav")  # playing cards, nothing to do with the prompt
    vocabulary = "Acme Shop, parcel, courier, order A1001"
    result = asr_transcriber.transcribe(audio, fast=fast, vocabulary=vocabulary)
    assert wer(reference, result.text) < 0.25, result.text
    assert "acme" not in result.text.lower() and "a1001" not in result.text.lower()
