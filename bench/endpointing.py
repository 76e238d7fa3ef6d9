"""The offline endpointing check: every recording through the server's caller-audio path, no call."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from bench.speech import SPEECH_DIR
from ivr.config import Settings

OFFLINE_SILENCES_MS = (250, 300, 350, 400, 450, 500, 600)
OFFLINE_MAX_S = 10.0  # one sentence each below this; the longer ones are speeches or sentence lists


def offline_endpoint_check(
    settings: Settings, silences_ms: tuple[int, ...], speech_dir: Path = SPEECH_DIR
) -> list[dict[str, Any]]:
    """Every recording (long ones too) through the server's own caller-audio path (mu-law, VAD, endpointer).

    Pure DSP, no call: it counts how many utterances each recording becomes at each endpointing silence.
    Read sentences of 4-10 s have comma pauses the short live-call recordings lack, so this is the stricter test.
    """
    from audio.caller import CallerAudio, CallerAudioConfig
    from audio.endpoint import EndpointerConfig, SpeechEnded
    from audio.files import read_audio, to_phone

    manifest = speech_dir / "manifest.tsv"
    if not manifest.is_file():
        return []
    with open(manifest, encoding="utf-8", newline="") as fh:
        # Longer recordings are several sentences or speeches with rhetorical pauses: splitting them is right.
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if float(r["duration_s"]) < OFFLINE_MAX_S]
    tail = b"\xff" * 8000 * 2  # two seconds of line silence after the recording
    phone = {r["path"]: to_phone(read_audio(speech_dir / r["path"], 16000), 16000) + tail for r in rows}
    a = settings.audio
    out = []
    for silence in silences_ms:
        split: list[str] = []
        counts = []
        for name, audio in phone.items():
            caller = CallerAudio(
                CallerAudioConfig(
                    vad_aggressiveness=a.vad_aggressiveness,
                    endpoint=EndpointerConfig(
                        speech_start_ms=a.speech_start_ms,
                        silence_ms=silence,
                        min_speech_ms=a.min_speech_ms,
                        max_utterance_s=a.max_utterance_s,
                    ),
                    loudness_calibration_db=a.loudness_calibration_db,
                    long_silence_s=a.long_silence_s,
                )
            )
            n = sum(
                isinstance(ev, SpeechEnded) for frame in caller.frames(audio) for ev in caller.process(frame).events
            )
            counts.append(n)
            if n > 1:
                split.append(f"{Path(name).stem} ({n})")
        out.append(
            {
                "endpoint_silence_ms": silence,
                "recordings": len(counts),
                "recordings_split": len(split),
                "split": split,
                "recordings_missed": sum(1 for c in counts if c == 0),
            }
        )
    return out
