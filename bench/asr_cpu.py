"""Whisper's CPU time per utterance against its wall time, with numpy's BLAS on its default threads and on one.

    .venv/bin/python bench/asr_cpu.py [--repeats 5] [--out FILE]

The bench's recordings (under 4 s, from ../shared/speech, through a phone line) are transcribed on the fast
path, alternating between the two settings in the same process, so machine load hits both alike. CPU time is
the whole process's (every thread), which is what a busy node pays for; a pause separates the two settings so
one's spinning helper threads are not charged to the other. See models/blas.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.asr_wer import load_recordings  # noqa: E402
from bench.speech import MAX_RECORDING_S  # noqa: E402
from models.asr import AsrConfig, Transcriber  # noqa: E402

SETTINGS = ("default", "one_thread")
SETTLE_S = 0.3  # longer than OpenBLAS lets its helper threads spin after a product


def run(repeats: int) -> dict[str, Any]:
    transcriber = Transcriber(AsrConfig())
    recordings = [r for r in load_recordings() if len(r["audio"]) / 16000 < MAX_RECORDING_S]
    transcriber.transcribe(recordings[0]["audio"])  # warm-up: first calls allocate
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        r["path"]: {s: {"cpu": [], "wall": []} for s in SETTINGS} for r in recordings
    }
    for k in range(repeats):
        for setting in SETTINGS if k % 2 == 0 else SETTINGS[::-1]:
            time.sleep(SETTLE_S)
            limits = threadpool_limits(limits=1, user_api="blas") if setting == "one_thread" else None
            for rec in recordings:
                w0, c0 = time.perf_counter(), time.process_time()
                transcriber.transcribe(rec["audio"])
                samples[rec["path"]][setting]["cpu"].append(time.process_time() - c0)
                samples[rec["path"]][setting]["wall"].append(time.perf_counter() - w0)
            if limits is not None:
                limits.restore_original_limits()
    items = []
    for path, by_setting in samples.items():
        item: dict[str, Any] = {"path": path}
        for setting, times in by_setting.items():
            item[setting] = {f"{what}_ms": round(statistics.median(v) * 1000, 1) for what, v in times.items()}
        items.append(item)
        print(
            f"{path[:40]:<40} default cpu {item['default']['cpu_ms']:6.1f} wall {item['default']['wall_ms']:6.1f}"
            f"  one thread cpu {item['one_thread']['cpu_ms']:6.1f} wall {item['one_thread']['wall_ms']:6.1f}"
        )
    total = {s: sum(i[s]["cpu_ms"] for i in items) for s in SETTINGS}
    return {
        "repeats": repeats,
        "utterances": items,
        "cpu_ms_sum": total,
        "cpu_ratio_default_to_one_thread": round(total["default"] / total["one_thread"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per utterance and setting")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    report = run(args.repeats)
    print(f"CPU per utterance, default BLAS threads / one thread: {report['cpu_ratio_default_to_one_thread']}x")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
