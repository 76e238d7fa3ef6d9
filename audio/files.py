"""Audio file helpers for tests, benchmarks and the CLI (the only module in ``audio/`` that does I/O)."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

from audio import mulaw
from audio.resample import resample

PHONE_RATE = 8000

PathLike = str | os.PathLike[str]


def read_audio(path: PathLike, sample_rate: int) -> np.ndarray:
    """Decode any file PyAV reads (wav, flac, mp3, ...) to float32 mono in [-1, 1] at ``sample_rate``.

    The same samples as faster-whisper's `decode_audio` (16-bit mono from FFmpeg's resampler; identical on every
    recording in ../shared/speech), without its `gc.collect()` after each file: in a process holding the models
    and a test suite's objects that collection took 65 ms a file, most of the time spent reading audio.
    """
    import av  # PyAV, which faster-whisper decodes with too; imported only where files are read

    if not Path(path).is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]  # what the resampler holds back
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return pcm.astype(np.float32) / np.float32(32768.0)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16, clipping what is beyond full scale (as a phone line's codec would)."""
    out: np.ndarray = np.clip(np.rint(np.asarray(x, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)
    return out


def to_phone(x: np.ndarray, src_rate: int) -> bytes:
    """float32 mono audio -> 8 kHz mu-law bytes, padded with silence to whole 20 ms frames."""
    pcm = float_to_int16(resample(np.asarray(x, dtype=np.float32), src_rate, PHONE_RATE))
    payload = mulaw.encode(pcm)
    pad = -len(payload) % mulaw.FRAME_BYTES
    return payload + bytes([mulaw.SILENCE_BYTE]) * pad


def write_wav(path: PathLike, pcm_int16: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM WAV."""
    pcm = np.asarray(pcm_int16)
    if pcm.dtype != np.int16 or pcm.ndim != 1:
        raise ValueError(f"write_wav needs 1-D int16 PCM, got {pcm.dtype} with shape {pcm.shape}")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())


def read_wav_int16(path: PathLike) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV as int16 mono (channels are averaged) and its sample rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).round().astype(np.int16)
    return data, rate
