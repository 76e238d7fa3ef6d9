"""Calls placed at once against the server, what each batch measured, and the two live sweeps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.callers import CallerSummary, CallPlan, callers_process_main
from bench.report import fmt, level_ok
from bench.server import BenchServer, LoopLag, start_server
from bench.speech import Script, Utterance, scripts_for
from bench.stats import count_splits, latency_ms, median, percentile
from ivr.config import Settings

FULL_LEVELS = (1, 5, 10, 20)
ENDPOINT_SILENCES_MS = (300, 400, 500)


@dataclass
class RunOutcome:
    """One batch of concurrent calls: every caller's summary and call record, and what the server spent."""

    summaries: list[CallerSummary]
    records: list[dict[str, Any] | None]
    servers: list[BenchServer]  # the server each call went to
    server_cpu_s: float
    caller_cpu_s: float
    loop_lag: dict[str, float]
    wall_s: float


async def run_calls(
    pool: concurrent.futures.Executor,
    calls: list[tuple[BenchServer, Script]],
    *,
    stagger_s: float,
    reply_timeout_s: float = 10.0,
) -> RunOutcome:
    """Places the calls at once (start times spread over `stagger_s`) and collects what each measured."""
    loop = asyncio.get_running_loop()
    lead_s = calls[0][0].services.settings.audio.outbound_lead_ms / 1000
    n = len(calls)
    plans = [CallPlan(server.ws_url, script, stagger_s * i / n) for i, (server, script) in enumerate(calls)]
    lag = LoopLag()
    lag.start()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    summaries, caller_cpu = await loop.run_in_executor(pool, callers_process_main, plans, lead_s, reply_timeout_s)
    records = [await server.call_record(s.call_sid) for (server, _), s in zip(calls, summaries, strict=True)]
    wall = time.monotonic() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    lag_stats = await lag.stop()
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return RunOutcome(summaries, records, [server for server, _ in calls], cpu_s, caller_cpu, lag_stats, wall)


def on_hold_from_s(record: dict[str, Any] | None) -> float | None:
    """Seconds after the call's start when it was handed to a person (None: never)."""
    if not record:
        return None
    started = datetime.fromisoformat(record["started_at"])
    for event in record.get("events", []):
        if event["kind"] == "escalation":
            return (datetime.fromisoformat(event["at"]) - started).total_seconds()
    return None


def summarize(run: RunOutcome, only: BenchServer | None = None) -> dict[str, Any]:
    """Everything measured for the calls of `run` (only those to `only`, if given)."""
    picked = [
        (s, r, srv)
        for s, r, srv in zip(run.summaries, run.records, run.servers, strict=True)
        if only is None or srv is only
    ]
    summaries = [s for s, _, _ in picked]
    # A caller on hold for a person is not waiting for the bot: what they say then (and the hold reminders that
    # may follow) is neither a response latency nor an unanswered turn.
    latencies: list[float] = []
    unanswered = on_hold = 0
    for s, record, _ in picked:
        hold_from = on_hold_from_s(record)
        spoken = [t for _, t, _ in s.plays if hold_from is None or t < hold_from]
        answered = [
            lat
            for lat, t in zip(s.response_latencies_s, s.replied_to_s, strict=True)
            if hold_from is None or t < hold_from
        ]
        latencies += answered
        on_hold += len(s.plays) - len(spoken)
        unanswered += max(0, len(spoken) - len(answered)) if s.error is None else s.unanswered
    call_minutes = sum(s.duration_s for s in summaries) / 60
    stages: dict[str, list[float]] = {
        "endpoint_wait": [],
        "asr": [],
        "understanding": [],
        "tts_first_frame": [],
        "total": [],
    }
    splits: list[int] = []
    for s, record, server in picked:
        if record is None:
            continue
        for event in record.get("events", []):
            if event["kind"] == "turn_latency":
                for stage, values in stages.items():
                    if isinstance(event["data"].get(stage), (int, float)):
                        values.append(float(event["data"][stage]))
        recordings = [p for p in s.plays if not p[0].startswith("piper:")]
        splits += count_splits(record, recordings, server.services.settings.audio.endpoint_silence_ms)
    errors = [s.error for s in summaries if s.error]

    def dist(values: list[float]) -> dict[str, float | None]:
        return {"median": median(values), "p95": round(percentile(values, 95), 1) if values else None}

    return {
        "callers": len(summaries),
        "utterances_per_call": max((len(s.plays) for s in summaries), default=0),
        "response_latency": latency_ms(latencies),
        "unanswered_utterances": unanswered,
        "utterances_on_hold": on_hold,
        "server_turn_ms_median": {stage: median(v) for stage, v in stages.items()},
        "asr_ms": dist(stages["asr"]),
        "tts_first_frame_ms": dist(stages["tts_first_frame"]),
        "first_greeting_ms": latency_ms(
            [s.first_audio_after_start_s for s in summaries if s.first_audio_after_start_s is not None]
        ),
        "event_loop_lag": run.loop_lag,
        "server_cpu_s": round(run.server_cpu_s, 2),
        "caller_process_cpu_s": round(run.caller_cpu_s, 2),
        "call_minutes": round(call_minutes, 3),
        "server_cpu_s_per_call_minute": round(run.server_cpu_s / call_minutes, 2)
        if call_minutes and only is None
        else None,
        "late_audio_mid_sentence": sum(s.late_mid_sentence for s in summaries),
        "max_mid_sentence_gap_ms": max((s.max_mid_sentence_gap_ms for s in summaries), default=0.0),
        "sentence_stalls": sum(s.sentence_stalls for s in summaries),
        "barge_in_clears": sum(s.clears for s in summaries),
        "recordings_spoken": len(splits),
        "recordings_split": sum(1 for c in splits if c > 1),
        "recordings_missed": sum(1 for c in splits if c == 0),
        "calls_closed_by_server": sum(1 for s in summaries if s.closed_by_server),
        "caller_errors": errors,
        "wall_s": round(run.wall_s, 1),
    }


async def concurrency_sweep(
    pool: concurrent.futures.Executor,
    settings: Settings,
    models: Any,
    data_dir: Path,
    utterances: list[Utterance],
    levels: list[int],
    *,
    quick: bool,
) -> list[dict[str, Any]]:
    """1, 5, 10, 20 callers at once on one server (quick: 1, 2), until a level goes over the limit."""
    sweep: list[dict[str, Any]] = []
    server = await start_server(settings, models, data_dir)
    try:
        default_silence = server.services.settings.audio.endpoint_silence_ms
        for n in levels:
            # Quick: one utterance per call. Full: the single call speaks more (its percentiles need
            # samples); concurrent callers speak 3 utterances each.
            recs = 0 if quick else (3 if n == 1 else 2)
            scripts = scripts_for(n, recs, utterances)
            print(f"\n{n} caller(s), {len(scripts[0])} utterance(s) each ...", flush=True)
            run = await run_calls(pool, [(server, sc) for sc in scripts], stagger_s=min(4.0, 0.4 * n))
            level = summarize(run)
            level["endpoint_silence_ms"] = default_silence
            sweep.append(level)
            r = level["response_latency"]
            print(
                f"  p50 {fmt(r['p50_ms'])} ms, p95 {fmt(r['p95_ms'])} ms, late audio "
                f"{level['late_audio_mid_sentence']}, unanswered {level['unanswered_utterances']}, "
                f"on hold {level['utterances_on_hold']}, {level['wall_s']} s",
                flush=True,
            )
            if level["caller_errors"]:
                print(f"  caller errors: {level['caller_errors'][:3]}", flush=True)
            # N=1 is the baseline: the sweep always goes on to the next level to show the trend.
            if not quick and n > 1 and not level_ok(level):
                print("  over the limit: the sweep stops here", flush=True)
                break
    finally:
        await server.close()
    return sweep


async def endpoint_sweep(
    pool: concurrent.futures.Executor, settings: Settings, models: Any, data_dir: Path, utterances: list[Utterance]
) -> list[dict[str, Any]]:
    """One caller per endpointing silence, all at once, each on its own server: the values are compared
    under the same load, and the whole sweep takes one call's time."""
    print(f"\nendpoint silence sweep {ENDPOINT_SILENCES_MS} ms, 1 caller each ...", flush=True)
    servers = [
        await start_server(settings, models, data_dir / f"data-ep{v}", audio={"endpoint_silence_ms": v})
        for v in ENDPOINT_SILENCES_MS
    ]
    try:
        # The four longest short recordings (the likeliest to hold a pause); the offline check covers every
        # recording, so the live calls stay short enough for `make bench` to last < 5 min.
        longest = sorted((u for u in utterances if u.source == "recording"), key=lambda u: u.duration_s)[-4:]
        script = scripts_for(1, len(longest), [u for u in utterances if u.source == "piper"] + longest)[0]
        run = await run_calls(pool, [(srv, script) for srv in servers], stagger_s=1.0)
    finally:
        for srv in servers:
            await srv.close()
    out = []
    for value, srv in zip(ENDPOINT_SILENCES_MS, servers, strict=True):
        part = summarize(run, only=srv)
        out.append(
            {
                "endpoint_silence_ms": value,
                "concurrent_calls": len(servers),
                "response_latency": part["response_latency"],
                "server_endpoint_wait_ms_median": part["server_turn_ms_median"]["endpoint_wait"],
                "server_total_ms_median": part["server_turn_ms_median"]["total"],
                "recordings_spoken": part["recordings_spoken"],
                "recordings_split": part["recordings_split"],
                "recordings_missed": part["recordings_missed"],
            }
        )
    return out
