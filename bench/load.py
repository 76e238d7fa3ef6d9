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
from bench.server import Target, start_server
from bench.speech import Script, Utterance, scripts_for
from bench.stats import LoopLag, count_splits, lag_summary, latency_ms, median, percentile
from ivr.config import Settings

FULL_LEVELS = (1, 10, 20, 40, 60)
REPLY_PATIENCE_S = 3.0
BENCH_FLOW = Path(__file__).resolve().parent / "flows" / "take_message.yaml"
ENDPOINT_SILENCES_MS = (300, 400, 500)


@dataclass
class RunOutcome:
    """One batch of concurrent calls: every caller's summary and call record, and what the server spent."""

    summaries: list[CallerSummary]
    records: list[dict[str, Any] | None]
    servers: list[Target]  # the server each call went to
    server_cpu_s: float
    server_cpu_s_by_part: dict[str, float]  # "main" (the server's own process), "asr" and "tts" (its workers)
    caller_cpu_s: float
    loop_lag: dict[str, float]
    wall_s: float
    caller_loop_lag: dict[str, float]  # the caller processes' loops: late there, replies are stamped late


async def run_calls(
    pool: concurrent.futures.Executor,
    calls: list[tuple[Target, Script]],
    *,
    stagger_s: float,
    reply_timeout_s: float = 10.0,
    caller_processes: int = 1,
) -> RunOutcome:
    """Places the calls at once (start times spread over `stagger_s`) and collects what each measured.

    The callers are dealt round-robin to `caller_processes` processes of `pool` (each an event loop of its own), so
    one busy caller loop does not make the server look late.
    """
    loop = asyncio.get_running_loop()
    lead_s = calls[0][0].lead_s
    n = len(calls)
    plans = [CallPlan(server.ws_url, script, stagger_s * i / n) for i, (server, script) in enumerate(calls)]
    k = max(1, min(caller_processes, n))
    lag = LoopLag()
    lag.start()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    calls[0][0].worker_cpu_s()  # start counting the ASR pool's CPU from here
    wall0 = time.monotonic()
    parts = await asyncio.gather(
        *(loop.run_in_executor(pool, callers_process_main, plans[j::k], lead_s, reply_timeout_s) for j in range(k))
    )
    by_plan: dict[int, CallerSummary] = {}
    for j, (part, _, _) in enumerate(parts):
        for m, summary in enumerate(part):
            by_plan[j + m * k] = summary
    summaries = [by_plan[i] for i in range(n)]
    caller_cpu = sum(cpu for _, cpu, _ in parts)
    caller_lag = lag_summary([sample for _, _, samples in parts for sample in samples])
    records = [await server.call_record(s.call_sid) for (server, _), s in zip(calls, summaries, strict=True)]
    wall = time.monotonic() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    lag_stats = await lag.stop()
    # The server's worker processes (ASR pool) count towards the server; the caller processes do not (they are
    # long-lived pool workers, not reaped children, so RUSAGE_CHILDREN never includes them).
    parts_s = {"main": (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)}
    parts_s.update(calls[0][0].worker_cpu_s())
    servers = [server for server, _ in calls]
    return RunOutcome(
        summaries, records, servers, sum(parts_s.values()), parts_s, caller_cpu, lag_stats, wall, caller_lag
    )


def refused_busy(record: dict[str, Any] | None) -> bool:
    """The call was turned away by admission control (it heard "all lines are busy")."""
    return bool(record) and any(e["kind"] == "refused_busy" for e in (record or {}).get("events", []))


def records_of(picked: list[tuple[CallerSummary, dict[str, Any] | None, Target]]) -> list[dict[str, Any] | None]:
    return [r for _, r, _ in picked]


def on_hold_from_s(record: dict[str, Any] | None) -> float | None:
    """Seconds after the call's start when it was handed to a person (None: never)."""
    if not record:
        return None
    started = datetime.fromisoformat(record["started_at"])
    for event in record.get("events", []):
        if event["kind"] == "escalation":
            return (datetime.fromisoformat(event["at"]) - started).total_seconds()
    return None


def summarize(run: RunOutcome, only: Target | None = None) -> dict[str, Any]:
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
    slowest: list[tuple[float, str]] = []  # (latency, what the caller had said): which recordings make the p95
    after_rec: list[float] = []
    unanswered = on_hold = 0
    for s, record, _ in picked:
        if refused_busy(record):
            continue  # told the lines are busy and offered a callback: an answer, not a turn left hanging
        hold_from = on_hold_from_s(record)
        spoken = [t for _, t, _ in s.plays if hold_from is None or t < hold_from]
        answered = [
            lat
            for lat, t in zip(s.response_latencies_s, s.replied_to_s, strict=True)
            if hold_from is None or t < hold_from
        ]
        latencies += answered
        for lat, t in zip(s.response_latencies_s, s.replied_to_s, strict=True):
            said = [label for label, start, _ in s.plays if start <= t]
            slowest.append((lat, said[-1] if said else "?"))
        after_rec += [
            lat
            for lat, t in zip(s.after_recording_s, s.replied_to_s, strict=True)
            if hold_from is None or t < hold_from
        ]
        on_hold += len(s.plays) - len(spoken)
        unanswered += max(0, len(spoken) - len(answered)) if s.error is None else s.unanswered
    call_minutes = sum(s.duration_s for s in summaries) / 60
    stages: dict[str, list[float]] = {
        "endpoint_wait": [],
        "asr": [],
        "understanding": [],
        "tts_first_frame": [],
        "total": [],
        "between_stages": [],  # the total less its parts: waits no stage accounts for
    }
    splits: list[int] = []
    for s, record, server in picked:
        if record is None:
            continue
        for event in record.get("events", []):
            if event["kind"] == "turn_latency":
                data = event["data"]
                parts = ("endpoint_wait", "asr", "understanding", "tts_first_frame")
                if isinstance(data.get("total"), (int, float)):
                    data = {**data, "between_stages": data["total"] - sum(data.get(p) or 0.0 for p in parts)}
                for stage, values in stages.items():
                    if isinstance(data.get(stage), (int, float)):
                        values.append(float(data[stage]))
        recordings = [p for p in s.plays if not p[0].startswith("piper:")]
        splits += count_splits(record, recordings, server.endpoint_silence_ms)
    # A call turned away at capacity is hung up on by design: what its caller then fails to say is no error.
    errors = [s.error for s, r, _ in picked if s.error and not refused_busy(r)]

    def dist(values: list[float]) -> dict[str, float | None]:
        return {"median": median(values), "p95": round(percentile(values, 95), 1) if values else None}

    return {
        "callers": len(summaries),
        "utterances_per_call": max((len(s.plays) for s in summaries), default=0),
        "response_latency": latency_ms(latencies),
        "response_after_recording": latency_ms(after_rec),
        "slowest_responses": [
            {"ms": round(lat * 1000, 1), "after": label} for lat, label in sorted(slowest, reverse=True)[:5]
        ],
        "unanswered_utterances": unanswered,
        # What a caller counts as no answer: nothing at all, or the first word only after REPLY_PATIENCE_S.
        "unanswered_within_3s": unanswered + sum(1 for lat in after_rec if lat > REPLY_PATIENCE_S),
        "reply_stalls": sum(s.reply_stalls for s in summaries),
        "calls_refused_busy": sum(1 for r in records_of(picked) if refused_busy(r)),
        "utterances_on_hold": on_hold,
        "server_turn_ms_median": {stage: median(v) for stage, v in stages.items()},
        # Set beside the callers' p95: what the server measured of the same turns (a gap is time on the wire,
        # in the kernel's socket buffers or in a caller process that waited for a core).
        "server_turn_ms_p95": {stage: round(percentile(v, 95), 1) if v else None for stage, v in stages.items()},
        "asr_ms": dist(stages["asr"]),
        "tts_first_frame_ms": dist(stages["tts_first_frame"]),
        "first_greeting_ms": latency_ms(
            [s.first_audio_after_start_s for s in summaries if s.first_audio_after_start_s is not None]
        ),
        "event_loop_lag": run.loop_lag,
        "caller_loop_lag": run.caller_loop_lag,
        "server_cpu_s": round(run.server_cpu_s, 2),
        "server_cpu_s_by_part": {part: round(s, 2) for part, s in run.server_cpu_s_by_part.items()},
        "caller_process_cpu_s": round(run.caller_cpu_s, 2),
        "call_minutes": round(call_minutes, 3),
        "server_cpu_s_per_call_minute": round(run.server_cpu_s / call_minutes, 2)
        if call_minutes and only is None
        else None,
        # Both cores of a 2-core machine busy (2.0) means the level asks for more than the machine has.
        "cores_busy": round((run.server_cpu_s + run.caller_cpu_s) / run.wall_s, 2) if run.wall_s else None,
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


@dataclass(frozen=True)
class SweepOptions:
    """How the concurrency sweep runs: `python -m bench --levels ... --turns ... --arrival-s ...`."""

    levels: tuple[int, ...] = FULL_LEVELS
    turns: int = 3  # utterances each caller speaks: a Piper phrase the flow answers, then real recordings
    single_call_turns: int = 6  # the 1-caller level speaks more, so its percentiles have samples
    arrival_s: float = 0.37  # between two callers' arrivals
    caller_processes: int = 2
    stop_on_fail: bool = False  # stop the sweep at the first level over the limit (saves time)
    # Every reply of this flow reads the caller's words back: new text each turn, never a cached prompt.
    flow: str = str(BENCH_FLOW)
    capacity: int = 100_000  # Settings.admission.max_calls of the server: by default none, to measure the raw limit


async def concurrency_sweep(
    pool: concurrent.futures.Executor,
    settings: Settings,
    models: Any,
    data_dir: Path,
    utterances: list[Utterance],
    options: SweepOptions,
    *,
    quick: bool,
) -> list[dict[str, Any]]:
    """Each level of callers on one server, arrivals spread `arrival_s` apart (quick: 1 and 2 callers, one turn)."""
    sweep: list[dict[str, Any]] = []
    server = await start_server(
        settings, models, data_dir, flow=options.flow, admission={"max_calls": options.capacity}
    )
    phrase_first = Path(options.flow).resolve() != BENCH_FLOW
    try:
        default_silence = server.endpoint_silence_ms
        for n in options.levels:
            turns = 1 if quick else (options.single_call_turns if n == 1 else options.turns)
            scripts = scripts_for(n, turns, utterances, phrase_first=phrase_first)
            print(f"\n{n} caller(s), {len(scripts[0])} utterance(s) each ...", flush=True)
            run = await run_calls(
                pool,
                [(server, sc) for sc in scripts],
                stagger_s=options.arrival_s * n,
                caller_processes=options.caller_processes,
            )
            level = summarize(run)
            level["endpoint_silence_ms"] = default_silence
            sweep.append(level)
            r = level["response_latency"]
            e = level["response_after_recording"]
            print(
                f"  from last voiced frame p50 {fmt(r['p50_ms'])} p95 {fmt(r['p95_ms'])} ms; from end of recording "
                f"p50 {fmt(e['p50_ms'])} p95 {fmt(e['p95_ms'])} ms; stalls {level['reply_stalls']}, unanswered "
                f"(3 s) {level['unanswered_within_3s']}, on hold {level['utterances_on_hold']}, busy "
                f"{level['calls_refused_busy']}, {level['wall_s']} s",
                flush=True,
            )
            if level["caller_errors"]:
                print(f"  caller errors: {level['caller_errors'][:3]}", flush=True)
            # N=1 is the baseline: the sweep always goes on to the next level to show the trend.
            if options.stop_on_fail and not quick and n > 1 and not level_ok(level):
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
        script = scripts_for(1, len(longest) + 1, [u for u in utterances if u.source == "piper"] + longest)[0]
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


async def admission_check(
    pool: concurrent.futures.Executor,
    settings: Settings,
    models: Any,
    data_dir: Path,
    utterances: list[Utterance],
    options: SweepOptions,
    sweep: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """The sweep's largest level again, with the capacity set to the largest smaller level that passed: the calls
    over it hear "all lines are busy", the others should be served as at that level. (Smaller, even when the
    largest level passed too: on a fast machine every level passes, and admission is still checked.)"""
    callers = max(lv["callers"] for lv in sweep)
    passed = [lv["callers"] for lv in sweep if level_ok(lv) and lv["callers"] < callers]
    capacity = max(passed, default=1)
    if callers <= capacity:
        return None
    print(f"\nadmission control: {callers} callers, capacity {capacity} ...", flush=True)
    server = await start_server(
        settings, models, data_dir / "data-admission", flow=options.flow, admission={"max_calls": capacity}
    )
    try:
        scripts = scripts_for(
            callers, options.turns, utterances, phrase_first=Path(options.flow).resolve() != BENCH_FLOW
        )
        run = await run_calls(
            pool,
            [(server, sc) for sc in scripts],
            stagger_s=options.arrival_s * callers,
            caller_processes=options.caller_processes,
        )
    finally:
        await server.close()
    level = summarize(run)
    level["capacity"] = capacity
    return level


async def peer_comparison(
    pool: concurrent.futures.Executor,
    settings: Settings,
    models: Any,
    data_dir: Path,
    utterances: list[Utterance],
    options: SweepOptions,
) -> dict[str, Any]:
    """One caller to our server, then the same caller to the peer (Pipecat, `bench/peer/server.py`), back to back:
    the same recordings, the same simulated Twilio caller, the same minute of this machine."""
    from bench.server import start_peer

    script = scripts_for(1, options.single_call_turns, utterances, phrase_first=False)[0]
    out: dict[str, Any] = {}
    ours = await start_server(settings, models, data_dir / "data-peer-ours", flow=str(BENCH_FLOW))
    try:
        print("\nside by side, 1 caller: ours ...", flush=True)
        out["ours"] = summarize(await run_calls(pool, [(ours, script)], stagger_s=0.0))
        out["ours"]["endpoint_silence_ms"] = ours.endpoint_silence_ms
    finally:
        await ours.close()
    peer = await start_peer()
    try:
        print("side by side, 1 caller: peer (Pipecat) ...", flush=True)
        out["peer"] = summarize(await run_calls(pool, [(peer, script)], stagger_s=0.0))
        out["peer"]["endpoint_silence_ms"] = peer.endpoint_silence_ms
    finally:
        await peer.close()
    # Both wait the same silence before they answer; what each adds after it is where they differ (ours: the
    # transcript is ready and the lead-in cached; the peer: Whisper, then Piper on the whole first sentence).
    for who in ("ours", "peer"):
        p50 = out[who]["response_latency"]["p50_ms"]
        out[who]["after_endpoint_p50_ms"] = None if p50 is None else round(p50 - out[who]["endpoint_silence_ms"], 1)
    for key in ("response_latency", "response_after_recording"):
        a, b = out["ours"][key]["p50_ms"], out["peer"][key]["p50_ms"]
        out[f"peer_over_ours_p50_{key}"] = round(b / a, 2) if a and b else None
    return out
