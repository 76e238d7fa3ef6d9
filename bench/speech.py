"""What the simulated callers say: short real recordings and a few Piper phrases, as 8 kHz mu-law."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("bench")

SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"
MAX_RECORDING_S = 4.0
# Phrases the shipped flow answers itself: a handoff to an agent would end the caller's turns early.
CALLER_PHRASES = ("Where is my parcel?", "I'd like to return a jacket.", "I want to track my order.")

Script = list[tuple[str, bytes]]  # (label, 8 kHz mu-law audio) of each utterance one caller speaks


@dataclass(frozen=True)
class Utterance:
    label: str
    audio: bytes  # 8 kHz mu-law, whole 20 ms frames
    source: str  # "recording" or "piper"

    @property
    def duration_s(self) -> float:
        return len(self.audio) / 8000


def load_utterances(synthesize: Callable[[str], bytes] | None, speech_dir: Path = SPEECH_DIR) -> list[Utterance]:
    """Short real recordings (under 4 s, shortest first), then Piper phrases, as 8 kHz mu-law."""
    from audio.files import read_audio, to_phone

    out: list[Utterance] = []
    manifest = speech_dir / "manifest.tsv"
    if manifest.is_file():
        with open(manifest, encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if float(r["duration_s"]) < MAX_RECORDING_S]
        for row in sorted(rows, key=lambda r: float(r["duration_s"])):
            audio = to_phone(read_audio(speech_dir / row["path"], 16000), 16000)
            out.append(Utterance(Path(row["path"]).stem, audio, "recording"))
    else:
        log.warning("no recordings at %s: using synthesised caller speech only", speech_dir)
    if synthesize is not None:
        for text in CALLER_PHRASES:
            out.append(Utterance(f"piper: {text}", synthesize(text), "piper"))
    if not out:
        raise RuntimeError(f"no caller speech: no recordings in {speech_dir} and no synthesizer")
    return out


def scripts_for(n_callers: int, turns: int, utterances: list[Utterance], *, phrase_first: bool = True) -> list[Script]:
    """What each caller says: `turns` utterances, real recordings (after a Piper phrase, with `phrase_first`).

    "Where is my parcel?" takes the ecommerce flow to "please say your order number", where the recordings
    (which are not order numbers) get re-asks instead of an early hand-over to an agent, so most utterances
    are answered whatever flow is loaded. Callers start at different points of the recording list.
    """
    phrases = [u for u in utterances if u.source == "piper"]
    recordings = [u for u in utterances if u.source == "recording"] or utterances
    k = len(recordings)
    lead = phrases[:1] if phrase_first and turns > 0 else []
    recordings_per_call = max(0, turns - len(lead))
    scripts = []
    for c in range(n_callers):
        picked = lead + [recordings[(c * recordings_per_call + j) % k] for j in range(recordings_per_call)]
        scripts.append([(u.label, u.audio) for u in picked])
    return scripts
