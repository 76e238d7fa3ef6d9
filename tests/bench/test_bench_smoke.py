"""`python -m bench --quick` end to end: a live server, simulated callers on loopback, a results file that says something."""

from __future__ import annotations

import json
import math

import pytest

from bench.run import run_bench
from ivr.config import Settings

# Two real-time levels of one short turn each (about 10 s a level): half a minute, more on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_quick_bench_writes_plausible_results(tmp_path, shared_models):
    out = tmp_path / "results.json"
    code = await run_bench(Settings(data_dir=tmp_path / "data"), out=out, quick=True, models=shared_models)
    assert code == 0
    results = json.loads(out.read_text())

    assert {
        "machine",
        "when",
        "single_call",
        "sweep",
        "max_callers_under_1_2s",
        "codec",
        "endpoint_sweep",
        "targets",
    } <= set(results)
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["python"].startswith("3.")
    assert [level["callers"] for level in results["sweep"]] == [1, 2]

    for level in results["sweep"]:
        assert not level["caller_errors"], level["caller_errors"]
        latency = level["response_latency"]
        # Every caller was answered: one latency per caller, each after the endpointing silence at least
        # (the reply cannot start before the server knows the caller stopped) and well under the reply timeout.
        assert latency["n"] == level["callers"]
        assert level["unanswered_utterances"] == 0
        silence_ms = level["endpoint_silence_ms"]
        assert silence_ms - 40 <= latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"] < 10_000
        # Recognition runs during the caller's trailing pause (ivr/turn_end.py): what is left of it after the
        # endpoint is measured, and is never more than the pause's head start short of a whole recognition.
        assert level["asr_ms"]["median"] is not None and 0 <= level["asr_ms"]["median"] < 2_000
        assert level["server_turn_ms_median"]["endpoint_wait"] >= silence_ms - 20
        assert level["first_greeting_ms"]["n"] == level["callers"] and level["first_greeting_ms"]["p50_ms"] > 0
        assert level["server_cpu_s_per_call_minute"] > 0
        assert level["event_loop_lag"]["max_ms"] >= level["event_loop_lag"]["p99_ms"] >= 0
        assert level["call_minutes"] > 0

    assert results["single_call"] == results["sweep"][0]
    assert results["max_callers_under_1_2s"] in (0, 1, 2)
    passed = [
        lv for lv in results["sweep"] if lv["response_latency"]["p95_ms"] <= 1200 and lv["late_audio_mid_sentence"] == 0
    ]
    assert (results["max_callers_under_1_2s"] == 2) == (len(passed) == 2)

    codec = results["codec"]
    assert codec["ours_encode_bulk_MB_s"] > 0 and codec["ours_decode_frames_per_s"] > 0
    if codec["audioop"] != "missing":
        assert codec["bit_exact_with_audioop"] is True
        assert all(r > 0 and math.isfinite(r) for r in codec["ratio_ours_over_audioop"].values())

    targets = results["targets"]
    assert targets["1_caller_p50_ms<=450"] == (results["single_call"]["response_latency"]["p50_ms"] <= 450)
    assert targets["40_callers_p95<=1200_no_stalls_all_answered"] is None  # not attempted in quick mode
    assert targets["1_caller_at_least_2x_faster_than_peer"] is None  # the peer was not run
    assert targets["no_recording_split"] == all(level["recordings_split"] == 0 for level in results["sweep"])
    for level in results["sweep"]:
        after = level["response_after_recording"]
        # The end of a recording comes at or after its last voiced frame: latency from it is never longer.
        assert after["n"] == level["response_latency"]["n"]
        assert after["p50_ms"] <= level["response_latency"]["p50_ms"] + 1
        assert level["reply_stalls"] >= 0 and level["calls_refused_busy"] == 0
