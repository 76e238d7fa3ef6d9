import numpy as np
import pytest

from audio.files import float_to_int16, read_audio
from audio.resample import StreamResampler, resample


def _band_power(x: np.ndarray, rate: int, lo: float, hi: float) -> float:
    """Mean-square power of x within [lo, hi) Hz (Parseval, so comparable across sample rates)."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2 / len(x) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


@pytest.fixture(scope="module")
def recording_16k(speech_dir) -> np.ndarray:
    return read_audio(speech_dir / "cmusphinx__005.wav", 16000)


def test_downsampling_a_recording_keeps_length_ratio_and_telephone_band(recording_16k):
    x = recording_16k
    y = resample(x, 16000, 8000)
    assert y.dtype == np.float32
    assert abs(len(y) - len(x) / 2) <= 1
    # Energy in the telephone band (300-3400 Hz) survives within 0.5 dB ...
    ratio_db = 10 * np.log10(_band_power(y, 8000, 300, 3400) / _band_power(x, 16000, 300, 3400))
    assert abs(ratio_db) < 0.5
    # ... and the waveform matches a band-limited copy of the original (upsample back and compare).
    back = resample(y, 8000, 16000)[: len(x)]
    keep = np.fft.rfftfreq(len(x), 1 / 16000) < 3400

    def lowpass(a):
        return np.fft.irfft(np.fft.rfft(a) * keep, len(x))

    ref = lowpass(x)
    err = np.sqrt(np.mean((lowpass(back) - ref) ** 2)) / np.sqrt(np.mean(ref**2))
    assert err < 0.01  # a one-sample misalignment alone gives ~0.5


def test_int16_in_gives_int16_out_and_upsampling_preserves_level(recording_16k):
    pcm8 = float_to_int16(resample(recording_16k, 16000, 8000))
    up = resample(pcm8, 8000, 16000)
    assert up.dtype == np.int16
    assert abs(len(up) - 2 * len(pcm8)) <= 1
    rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))  # noqa: E731
    assert abs(20 * np.log10(rms(up) / rms(pcm8))) < 0.3


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_streaming_in_20ms_chunks_equals_one_shot(recording_16k, dtype):
    x = recording_16k if dtype == np.float32 else float_to_int16(recording_16k)
    one_shot = resample(x, 16000, 8000)
    stream = StreamResampler(16000, 8000, dtype)
    parts = [stream.process(x[i : i + 320]) for i in range(0, len(x), 320)]
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    assert streamed.dtype == np.dtype(dtype)
    assert abs(len(streamed) - len(one_shot)) <= 1
    n = min(len(streamed), len(one_shot))
    diff = np.abs(streamed[:n].astype(np.float64) - one_shot[:n].astype(np.float64))
    scale = 1.0 if dtype == np.float32 else 32768.0
    assert diff.max() / scale < 1e-3


def test_stream_rejects_wrong_dtype_and_use_after_flush():
    stream = StreamResampler(8000, 16000, np.int16)
    with pytest.raises(TypeError):
        stream.process(np.zeros(160, dtype=np.float32))
    stream.flush()
    with pytest.raises(RuntimeError):
        stream.process(np.zeros(160, dtype=np.int16))
