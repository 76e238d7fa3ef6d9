"""Per-flow understanding on public data no one here wrote: ``python -m bench.nlu [--out bench/nlu.json]``.

For each shipped flow, at its own answer threshold: of the requests the flow handles (``bench/nlu_mapping.yaml``)
how many are answered with the right intent, and of the requests outside it how many are answered anyway (a
confident wrong answer). Sets: ``../shared/nlu/banking77_test.csv`` and ``hwu64_test.csv`` (never trained on;
the banking libraries use the Banking77 *training* split only) and the project's own held-out paraphrases
``models/data/intents_heldout.yaml`` (no flow is built from them), which are the only in-flow requests for
ecommerce and telecom. Also the classifier's cost: median ms per utterance, one utterance per call as on a live
call, build time, resident memory and the model package's size on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
NLU_DIR = ROOT.parent / "shared" / "nlu"
MAPPING = Path(__file__).resolve().parent / "nlu_mapping.yaml"
HELDOUT = ROOT / "models" / "data" / "intents_heldout.yaml"
FLOWS = ("banking", "ecommerce_delivery", "telecom_billing")
LATENCY_SAMPLE = 300


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def _heldout(intents: list[str]) -> list[tuple[str, str]]:
    raw = yaml.safe_load(HELDOUT.read_text(encoding="utf-8"))["intents"]
    return [(t, name if name in intents else "") for name, texts in raw.items() for t in texts]


def score(results: list[Any], texts: list[str], truth: list[str], threshold: float) -> dict[str, Any]:
    """truth: the flow's intent for in-flow requests, "" for out-of-flow ones."""
    inside = [(r, t) for r, t in zip(results, truth, strict=True) if t]
    outside = [r for r, t in zip(results, truth, strict=True) if not t]
    right = sum(r.confidence >= threshold and r.intent == t for r, t in inside)
    wrong_in = sum(r.confidence >= threshold and r.intent != t for r, t in inside)
    answered_out = sum(r.confidence >= threshold for r in outside)
    return {
        "in_flow": len(inside),
        "in_answered_right": round(right / len(inside), 4) if inside else None,
        "in_answered_wrong": round(wrong_in / len(inside), 4) if inside else None,
        "out_of_flow": len(outside),
        "out_answered": round(answered_out / len(outside), 4) if outside else None,
        "out_answered_examples": sorted(
            (
                (r.intent, r.confidence, x)
                for r, x, t in zip(results, texts, truth, strict=True)
                if not t and r.confidence >= threshold
            ),
            key=lambda e: -e[1],
        )[:5],
    }


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from flows.cli import load_flow
    from models.embeddings import default_model_dir
    from models.intent import IntentModels, clean_text

    mapping = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    sets = {"banking77": _read_csv(NLU_DIR / "banking77_test.csv"), "hwu64": _read_csv(NLU_DIR / "hwu64_test.csv")}
    models = IntentModels(cache_dir=ROOT / "data" / "intent-cache")
    t0 = time.perf_counter()
    encoder = models.encoder
    load_s = time.perf_counter() - t0
    vectors = {n: encoder.encode([clean_text(t) or "." for t, _ in rows]) for n, rows in sets.items()}
    report: dict[str, Any] = {"flows": {}, "encoder_load_s": round(load_s, 3)}
    for name in FLOWS:
        flow = load_flow(name)
        t0 = time.perf_counter()
        clf = models.classifier(flow.intent_set().spec())
        build_s = time.perf_counter() - t0
        threshold = flow.answer_threshold
        per_set: dict[str, Any] = {}
        all_sets = {**sets, "heldout": _heldout(clf.intents)}
        for set_name, rows in all_sets.items():
            texts = [t for t, _ in rows]
            truth = (
                [c for _, c in rows] if set_name == "heldout" else [mapping[name][set_name].get(c, "") for _, c in rows]
            )
            emb = vectors[set_name] if set_name in vectors else encoder.encode([clean_text(t) or "." for t in texts])
            results = clf.classify_vectors(emb, [clean_text(t) for t in texts])
            per_set[set_name] = score(results, texts, truth, threshold)
        report["flows"][name] = {"threshold": threshold, "build_s": round(build_s, 2), "sets": per_set}
    sample = [t for t, _ in sets["banking77"][:: max(1, len(sets["banking77"]) // LATENCY_SAMPLE)]]
    clf = models.classifier(load_flow("banking").intent_set().spec())
    times = []
    for text in sample:
        t0 = time.perf_counter()
        clf.classify(text)
        times.append(time.perf_counter() - t0)
    report["ms_per_utterance"] = {
        "median": round(statistics.median(times) * 1000, 2),
        "p90": round(sorted(times)[int(0.9 * len(times))] * 1000, 2),
        "n": len(times),
    }
    report["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["model_package_mib"] = round(_dir_size(default_model_dir()) / 2**20, 1)
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"{'flow':<20} {'thr':>4} {'set':<10} {'in n':>5} {'right':>6} {'wrong':>6} {'out n':>6} {'answered':>8}")
    for name, flow in report["flows"].items():
        for set_name, s in flow["sets"].items():
            right = "-" if s["in_answered_right"] is None else f"{100 * s['in_answered_right']:.1f}%"
            wrong = "-" if s["in_answered_wrong"] is None else f"{100 * s['in_answered_wrong']:.1f}%"
            out = "-" if s["out_answered"] is None else f"{100 * s['out_answered']:.2f}%"
            print(
                f"{name:<20} {flow['threshold']:>4} {set_name:<10} {s['in_flow']:>5} {right:>6} {wrong:>6} "
                f"{s['out_of_flow']:>6} {out:>8}"
            )
    ms = report["ms_per_utterance"]
    print(
        f"classifier: median {ms['median']} ms, p90 {ms['p90']} ms per utterance (n={ms['n']}); "
        f"max RSS {report['max_rss_mib']} MiB; model package {report['model_package_mib']} MiB; "
        f"encoder load {report['encoder_load_s']} s; build per flow "
        + ", ".join(f"{n} {f['build_s']} s" for n, f in report["flows"].items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--examples", action="store_true", help="print the most confident wrong answers")
    args = parser.parse_args()
    report = run()
    print_table(report)
    if args.examples:
        for name, flow in report["flows"].items():
            for set_name, s in flow["sets"].items():
                for ex in s["out_answered_examples"]:
                    print(f"  {name}/{set_name}: {ex}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
