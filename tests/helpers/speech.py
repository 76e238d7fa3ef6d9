"""The team's shared real-speech fixtures: recordings in ``../shared/speech`` (sibling of the repo)."""

from __future__ import annotations

import csv
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from audio import mulaw
from audio.files import read_audio, to_phone
from audio.vad import Vad

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
SPEECH_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "speech"
# Decode at 16 kHz (a clean multiple of 8 kHz); to_phone resamples to 8 kHz like a carrier would.
_DECODE_RATE = 16000


@lru_cache(maxsize=1)
def _manifest() -> tuple[dict, ...]:
    rows = []
    with open(SPEECH_DIR / "manifest.tsv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            rows.append(
                {
                    "name": row["path"],
                    "path": SPEECH_DIR / row["path"],
                    "duration_s": float(row["duration_s"]),
                    "transcript": row["transcript"],
                    "sample_rate": int(row["sample_rate"]),
                    "license": row.get("license", ""),
                }
            )
    return tuple(rows)


def manifest() -> list[dict]:
    """One dict per recording: name, path (absolute Path), duration_s, transcript, sample_rate, license."""
    return [dict(r) for r in _manifest()]


def _resolve(name: str) -> Path:
    path = SPEECH_DIR / name
    if path.is_file():
        return path
    matches = [r["path"] for r in _manifest() if Path(r["name"]).stem == name]
    if len(matches) != 1:
        raise FileNotFoundError(f"no recording named {name!r} in {SPEECH_DIR}")
    return matches[0]


@cache
def phone_recording(name: str) -> bytes:
    """The recording (file name, with or without extension) as 8 kHz mu-law, whole 160-byte frames."""
    return to_phone(read_audio(_resolve(name), _DECODE_RATE), _DECODE_RATE)


def phone_pcm(name: str) -> np.ndarray:
    """The recording as a phone line delivers it: 8 kHz int16 decoded from mu-law (a fresh array)."""
    return mulaw.decode(phone_recording(name))


def transcript(name: str) -> str:
    path = _resolve(name)
    return next(r["transcript"] for r in _manifest() if r["path"] == path)


def frames_of(pcm: np.ndarray) -> np.ndarray:
    """Whole 20 ms frames of 8 kHz PCM as an (n, 160) view; a partial last frame is dropped."""
    n = len(pcm) // FRAME_SAMPLES
    return pcm[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)


def vad_flags(pcm: np.ndarray, aggressiveness: int = 2) -> np.ndarray:
    """webrtcvad's verdict for each 20 ms frame of 8 kHz PCM, as a bool array."""
    vad = Vad(aggressiveness)
    return np.array([vad.is_speech(f) for f in frames_of(pcm)], dtype=bool)


def silence(seconds: float) -> np.ndarray:
    """Digital silence (int16 zeros) at 8 kHz."""
    return np.zeros(int(round(seconds * 8000)), dtype=np.int16)
