import numpy as np
import pytest

from audio.vad import Vad
from tests.helpers.speech import frames_of, phone_pcm, vad_flags


@pytest.mark.parametrize("name", ["coqui-ai__LJ001-0013", "cmusphinx__005", "SYSTRAN__jfk"])
def test_most_frames_of_real_speech_over_a_phone_line_are_voiced(speech_dir, name):
    pcm = phone_pcm(name)
    flags = vad_flags(pcm)
    # JFK pauses between phrases and the cards recording has silence around it: "most", not "all".
    assert flags.mean() > 0.6


def test_digital_silence_and_low_line_noise_are_unvoiced():
    rng = np.random.default_rng(7)
    hiss = rng.normal(0, 20, 8000 * 2).round().astype(np.int16)  # about -64 dBFS of white noise
    quiet = np.zeros(8000 * 2, dtype=np.int16)
    assert not vad_flags(quiet).any()
    assert vad_flags(hiss).mean() < 0.05


def test_speech_stretch_is_voiced_and_padding_around_it_is_not(speech_dir):
    pcm = phone_pcm("coqui-ai__LJ001-0013")
    padded = np.concatenate([np.zeros(8000, np.int16), pcm, np.zeros(8000, np.int16)])
    flags = vad_flags(padded)
    n_speech = len(pcm) // 160
    assert not flags[:45].any()  # the first 0.9 s are digital silence
    assert flags[50 : 50 + n_speech].mean() > 0.8
    assert not flags[50 + n_speech + 15 :].any()  # hangover dies out within 300 ms


@pytest.mark.parametrize("ms", [10, 20, 30])
def test_accepts_10_20_30_ms_frames(ms):
    assert Vad(3).is_speech(np.zeros(8 * ms, dtype=np.int16)) is False


@pytest.mark.parametrize("n", [0, 100, 161, 320])
def test_wrong_frame_length_is_a_clear_error(n):
    with pytest.raises(ValueError, match="10, 20 or 30 ms"):
        Vad().is_speech(np.zeros(n, dtype=np.int16))


def test_frames_of_drops_partial_frame():
    assert frames_of(np.zeros(330, np.int16)).shape == (2, 160)


def test_16khz_frames_need_16khz_lengths():
    vad = Vad(sample_rate=16000)
    assert vad.is_speech(np.zeros(320, dtype=np.int16)) is False
    with pytest.raises(ValueError):
        vad.is_speech(np.zeros(240, dtype=np.int16))  # 20 ms at 8 kHz is 15 ms at 16 kHz
    with pytest.raises(ValueError):
        Vad(sample_rate=11025)
    with pytest.raises(ValueError):
        Vad(aggressiveness=4)


def test_a_muted_line_before_the_caller_speaks_does_not_stretch_their_words_into_the_silence_after(speech_dir):
    # "seven of clubs" ends on a faint breath. Fed exact zeros first, WebRTC's VAD tuned its noise model to
    # them and called that breath and three frames of the silence after it speech: every turn ended 200 ms late.
    words = phone_pcm("cmusphinx__003")
    words = np.concatenate([words, np.zeros(-len(words) % 160, dtype=np.int16)])
    quiet = np.zeros(8000 * 2, dtype=np.int16)

    alone = np.flatnonzero(vad_flags(words))
    after_a_muted_line = np.flatnonzero(vad_flags(np.concatenate([quiet, words, quiet])))

    assert alone.size
    shift = len(quiet) // 160
    assert after_a_muted_line.max() - shift == alone.max()
    assert after_a_muted_line.min() - shift == alone.min()
