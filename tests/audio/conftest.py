"""Fixtures for the audio DSP tests (helpers shared with other tests live in tests/helpers/speech.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repo root must be importable (``audio``, ``tests.helpers``) however pytest is started; the project is
# not pip-installed into the venv.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    from tests.helpers.speech import SPEECH_DIR

    if not (SPEECH_DIR / "manifest.tsv").is_file():
        pytest.skip(f"real recordings not found at {SPEECH_DIR}")
    return SPEECH_DIR
