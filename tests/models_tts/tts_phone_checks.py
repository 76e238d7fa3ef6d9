"""Measurements shared by the TTS tests (a module of its own: conftest.py names clash across test folders)."""

from __future__ import annotations

import numpy as np

from audio import mulaw
from audio.resample import resample

FRAME = mulaw.FRAME_BYTES


def frame_levels_dbfs(ulaw: bytes) -> np.ndarray:
    """RMS level of each 20 ms frame of 8 kHz mu-law, in dBFS."""
    pcm = mulaw.decode(ulaw).astype(np.float64)
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME)
    rms = np.sqrt((frames**2).mean(axis=1))
    return 20 * np.log10(np.maximum(rms, 1.0) / 32768.0)


def transcribe_phone(model, ulaw: bytes) -> str:
    """What Whisper hears in 8 kHz mu-law (upsampled to the 16 kHz it expects)."""
    pcm16k = resample(mulaw.decode(ulaw), 8000, 16000).astype(np.float32) / 32768.0
    segments, _ = model.transcribe(pcm16k, language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)
