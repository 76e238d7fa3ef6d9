"""Word error rate and speed of the two ASR paths (padded reference vs fast) on real recordings over a phone line.

    .venv/bin/python bench/asr_wer.py [--out bench/asr_wer.json] [--repeats 3] [--pads-s 3,5] [--model whisper-base]

Every recording in ../shared/speech (manifest.tsv) is sent through 8 kHz mu-law as a call would be, resampled
back to 16 kHz, and transcribed by both paths; timings are interleaved (padded, fast, padded, fast, ...) in the
same process so machine load hits both alike. WER is computed with jiwer after normalising both sides (lower
case, no punctuation, numbers spelled out). "short" is utterances under 10 s; "all" includes the long ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audio import mulaw  # noqa: E402
from audio.files import read_audio, to_phone  # noqa: E402
from audio.resample import resample  # noqa: E402
from models.asr import FAST_PADS_S, AsrConfig, Transcriber  # noqa: E402
from models.asr_text import normalize_transcript  # noqa: E402

SPEECH_DIR = ROOT.parent / "shared" / "speech"
SHORT_S = 10.0


def phone_line(audio_16k: np.ndarray) -> np.ndarray:
    """16 kHz float -> 8 kHz mu-law -> 16 kHz float, as the server hears a caller."""
    pcm = mulaw.decode(to_phone(audio_16k, 16000))
    return resample(pcm.astype(np.float32) / 32768.0, 8000, 16000)


def load_recordings(folder: Path = SPEECH_DIR) -> list[dict[str, Any]]:
    with open(folder / "manifest.tsv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        {"path": r["path"], "reference": r["transcript"], "audio": phone_line(read_audio(folder / r["path"], 16000))}
        for r in rows
    ]


def summarise(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(items)}
    refs = [normalize_transcript(i["reference"]) for i in items]
    for path in ("padded", "fast"):
        hyps = [normalize_transcript(i[path]["text"]) for i in items]
        out[path] = {
            "wer": round(float(jiwer.wer(refs, hyps)), 4),
            "median_s": round(statistics.median(i[path]["median_s"] for i in items), 4),
        }
    out["fast"]["fast_path_share"] = round(sum(i["fast"]["path"] == "fast" for i in items) / len(items), 3)
    out["speedup_median"] = round(out["padded"]["median_s"] / out["fast"]["median_s"], 2)
    out["speedup_per_utterance_median"] = round(
        statistics.median(i["padded"]["median_s"] / i["fast"]["median_s"] for i in items), 2
    )
    return out


def run(repeats: int, pads_s: tuple[float, ...], timestamps: bool, model: str | None = None) -> dict[str, Any]:
    transcriber = Transcriber(AsrConfig(model_path=model), fast_pads_s=pads_s, fast_timestamps=timestamps)
    recordings = load_recordings()
    transcriber.transcribe(recordings[0]["audio"], fast=True)  # warm-up: first calls allocate
    transcriber.transcribe(recordings[0]["audio"], fast=False)
    items = []
    for rec in recordings:
        times: dict[str, list[float]] = {"padded": [], "fast": []}
        results = {}
        for k in range(repeats):
            order = ("padded", "fast") if k % 2 == 0 else ("fast", "padded")
            for path in order:
                t0 = time.perf_counter()
                results[path] = transcriber.transcribe(rec["audio"], fast=path == "fast")
                times[path].append(time.perf_counter() - t0)
        item = {"path": rec["path"], "audio_s": round(len(rec["audio"]) / 16000, 2), "reference": rec["reference"]}
        for path in ("padded", "fast"):
            item[path] = {
                "text": results[path].text,
                "path": results[path].path,
                "confidence": round(results[path].confidence, 3),
                "median_s": round(statistics.median(times[path]), 4),
            }
        items.append(item)
        print(
            f"{item['audio_s']:6.2f}s {item['padded']['median_s']:.3f}s {item['fast']['median_s']:.3f}s "
            f"[{results['fast'].path}] {rec['path']}",
            file=sys.stderr,
        )
    short = [i for i in items if i["audio_s"] < SHORT_S]
    report = summarise(items)
    report["short"] = summarise(short)
    report["short_under_s"] = SHORT_S
    report["long_utterances"] = [i["path"] for i in items if i["audio_s"] >= SHORT_S]
    report["fast_pads_s"] = list(pads_s)
    report["fast_timestamps"] = timestamps
    report["repeats"] = repeats
    report["model"] = model or "tiny.en"
    report["utterances"] = items
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"{'set':<6} {'n':>3} {'padded WER':>10} {'fast WER':>9} {'padded s':>9} {'fast s':>7} {'speedup':>8}")
    for name, part in (("short", report["short"]), ("all", report)):
        print(
            f"{name:<6} {part['n']:>3} {part['padded']['wer']:>10.3f} {part['fast']['wer']:>9.3f} "
            f"{part['padded']['median_s']:>9.3f} {part['fast']['median_s']:>7.3f} {part['speedup_median']:>7.2f}x"
        )
    print(f"long (>= {SHORT_S:.0f} s, in 'all' only): {', '.join(report['long_utterances'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per utterance and path")
    parser.add_argument(
        "--pads-s",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=FAST_PADS_S,
        help="zero feature paddings the fast path tries in turn, comma-separated",
    )
    parser.add_argument("--no-timestamps", action="store_true", help="fast path decodes with <|notimestamps|>")
    parser.add_argument("--model", default=None, help="AsrConfig.model_path: a CTranslate2 dir or 'whisper-base'")
    args = parser.parse_args()
    report = run(args.repeats, args.pads_s, not args.no_timestamps, args.model)
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
