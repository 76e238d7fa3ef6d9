"""Piper's CPU time per sentence with the voice's graph as shipped and with its convolutions in 2-D.

    .venv/bin/python -m bench.tts_cpu [--repeats 7] [--out FILE]

The sentences are what the bench's flow renders at every turn (the words of its six recordings, as Whisper
writes them) and two longer replies. Both graphs are loaded in one process with one thread each, as a Piper
worker runs them, rendered without Piper's random noise so the audio can be compared sample by sample, and
alternated round by round so machine load hits both alike. See models/piper_graph.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.blas import one_blas_thread
from models.tts import Synthesizer, TtsConfig

SENTENCES = (
    "10 of clubs.",
    "7 of clubs.",
    "In 18 13.",
    "then in the same operations with ugly ones.",
    "He might even have been made amiable himself.",
    "Eight of spades, four of close, seven of hearts.",
    "Your parcel left our depot this morning and should arrive on Thursday between nine and twelve.",
    "I can send you a text with a link to book a callback at a time that suits you.",
)
GRAPHS = ("shipped", "conv2d")


def run(repeats: int) -> dict[str, Any]:
    one_blas_thread()
    voices = {g: Synthesizer(TtsConfig(deterministic=True, conv2d=g == "conv2d")) for g in GRAPHS}
    audio = {g: [v.synthesize(s) for s in SENTENCES] for g, v in voices.items()}  # also the warm-up
    cpu: dict[str, dict[str, list[float]]] = {s: {g: [] for g in GRAPHS} for s in SENTENCES}
    for k in range(repeats):
        for graph in GRAPHS if k % 2 == 0 else GRAPHS[::-1]:
            for sentence in SENTENCES:
                c0 = time.process_time()
                voices[graph].synthesize(sentence)
                cpu[sentence][graph].append(time.process_time() - c0)
    rows = []
    for i, sentence in enumerate(SENTENCES):
        a, b = (audio[g][i].astype(np.int32) for g in GRAPHS)
        row: dict[str, Any] = {
            "sentence": sentence,
            "audio_s": round(len(a) / voices["shipped"].sample_rate, 2),
            "max_sample_difference": int(np.abs(a - b).max()) if len(a) == len(b) else None,
        }
        row.update({f"{g}_cpu_ms": round(statistics.median(cpu[sentence][g]) * 1000, 1) for g in GRAPHS})
        rows.append(row)
        print(
            f"{sentence[:48]:<48} {row['audio_s']:5.2f} s  shipped {row['shipped_cpu_ms']:6.1f} ms"
            f"  conv2d {row['conv2d_cpu_ms']:6.1f} ms  max difference {row['max_sample_difference']}"
        )
    total = {g: round(sum(r[f"{g}_cpu_ms"] for r in rows), 1) for g in GRAPHS}
    return {
        "repeats": repeats,
        "sentences": rows,
        "cpu_ms_sum": total,
        "cpu_ratio_conv2d_to_shipped": round(total["conv2d"] / total["shipped"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per sentence and graph")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    report = run(args.repeats)
    print(f"CPU per sentence, conv2d / shipped graph: {report['cpu_ratio_conv2d_to_shipped']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
