import numpy as np
import pytest

from audio import mulaw
from audio.files import read_audio, read_wav_int16, to_phone, write_wav
from tests.helpers.speech import SPEECH_DIR, manifest, phone_recording


def test_wav_round_trip(tmp_path):
    pcm = np.arange(-16000, 16000, 7, dtype=np.int16)
    write_wav(tmp_path / "x.wav", pcm, 8000)
    back, rate = read_wav_int16(tmp_path / "x.wav")
    assert rate == 8000
    np.testing.assert_array_equal(back, pcm)
    # And PyAV reads our file the same way.
    np.testing.assert_allclose(read_audio(tmp_path / "x.wav", 8000), pcm / 32768.0, atol=1e-6)


def test_write_wav_refuses_float_samples(tmp_path):
    with pytest.raises(ValueError, match="int16"):
        write_wav(tmp_path / "x.wav", np.zeros(10, np.float32), 8000)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_audio(tmp_path / "nope.wav", 16000)


@pytest.mark.parametrize("name", ["SYSTRAN__jfk.flac", "coqui-ai__LJ001-0013.wav", "cmusphinx__001.wav"])
def test_recordings_read_as_faster_whisper_reads_them(speech_dir, name):
    from faster_whisper.audio import decode_audio

    path = next(r["path"] for r in manifest() if r["name"] == name)  # 44.1 kHz flac, 22 kHz and 16 kHz wav
    for rate in (8000, 16000):
        np.testing.assert_array_equal(read_audio(path, rate), decode_audio(str(path), sampling_rate=rate))


def test_to_phone_gives_whole_frames_of_mulaw_at_8khz(speech_dir):
    rec = next(r for r in manifest() if r["name"] == "SYSTRAN__jfk.flac")  # 44.1 kHz flac
    x = read_audio(rec["path"], 16000)
    payload = to_phone(x, 16000)
    assert len(payload) % mulaw.FRAME_BYTES == 0
    assert abs(len(payload) / 8000 - rec["duration_s"]) < 0.03
    # Clipping instead of wrap-around: an over-full-scale input stays at the extremes.
    hot = mulaw.decode(to_phone(np.full(1600, 1.5, np.float32), 8000))
    assert hot.min() > 30000


def test_manifest_and_phone_recording_helpers(speech_dir):
    rows = manifest()
    assert len(rows) >= 20
    assert all(r["path"].is_file() and r["transcript"] for r in rows)
    assert SPEECH_DIR == speech_dir
    by_stem = phone_recording("cmusphinx__001")
    assert by_stem == phone_recording("cmusphinx__001.wav")
    assert abs(len(by_stem) / 8000 - 1.095) < 0.03
    with pytest.raises(FileNotFoundError):
        phone_recording("no-such-recording")
