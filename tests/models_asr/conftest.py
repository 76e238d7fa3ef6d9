"""One Whisper model per test session, and real recordings routed through a phone line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from audio import mulaw
from audio.files import read_audio, to_phone
from audio.resample import resample
from models.asr import AsrConfig, Transcriber

SPEECH_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "speech"


def phone_line(audio_16k: np.ndarray) -> np.ndarray:
    """16 kHz float -> 8 kHz mu-law -> 16 kHz float, as the server hears a caller."""
    pcm = mulaw.decode(to_phone(audio_16k, 16000))
    return resample(pcm.astype(np.float32) / 32768.0, 8000, 16000)


@pytest.fixture(scope="session")
def asr_transcriber() -> Transcriber:
    return Transcriber(AsrConfig())


@pytest.fixture(scope="session")
def speech_manifest() -> dict[str, str]:
    manifest = SPEECH_DIR / "manifest.tsv"
    if not manifest.is_file():
        pytest.skip(f"real recordings not found at {SPEECH_DIR}")
    with open(manifest, encoding="utf-8") as fh:
        return {row["path"]: row["transcript"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="session")
def phone_recording(speech_manifest: dict[str, str]):
    """name -> (16 kHz float audio after a mu-law phone line, reference transcript)."""
    cache: dict[str, tuple[np.ndarray, str]] = {}

    def load(name: str) -> tuple[np.ndarray, str]:
        if name not in cache:
            cache[name] = (phone_line(read_audio(SPEECH_DIR / name, 16000)), speech_manifest[name])
        return cache[name]

    return load
