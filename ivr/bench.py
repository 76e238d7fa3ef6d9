"""`ivr bench`: response latency of the whole server under simulated callers on loopback.

The server runs in this process exactly as `ivr serve` builds it (aiohttp on 127.0.0.1, SQLite in a temp
dir, the demo CRM as a real HTTP service). The simulated callers run in a separate process (spawned, no
models loaded there) so their JSON and base64 work neither shares the server's event loop nor counts
towards the server's CPU time. Each caller waits for the greeting, then speaks short real recordings (and a
few Piper-synthesised phrases) through 8 kHz mu-law at real-time pace, waiting for every reply.

Measured:
- response latency: caller's last voiced frame sent -> first reply frame received (what a caller hears);
- per-turn server breakdown (ASR, TTS to first frame, ...) from the call records' `turn_latency` events;
- the server's event-loop lag (a 10 ms ticker in the server's loop);
- server CPU seconds per call-minute; time from `start` to the first greeting frame;
- late outbound audio: the caller's playback buffer running dry in the middle of a bot sentence;
- a concurrency sweep, mu-law codec speed against stdlib `audioop`, and an endpointing-silence sweep.

Numbers are medians or percentiles of one run; the machine may be shared, so compare runs on a quiet one.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import csv
import json
import logging
import multiprocessing
import os
import platform
import resource
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ivr.config import BackendConfig, Settings

log = logging.getLogger("ivr.bench")

SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "speech"
MAX_RECORDING_S = 4.0
# Phrases the shipped flow answers itself: a handoff to an agent would end the caller's turns early.
CALLER_PHRASES = ("Where is my parcel?", "I'd like to return a jacket.", "I want to track my order.")
UNKNOWN_CALLER = "+12025550199"  # not in the demo CRM: the short greeting, the same for every caller
P95_LIMIT_MS = 1200.0
FULL_LEVELS = (1, 5, 10, 20)
ENDPOINT_SILENCES_MS = (300, 400, 500)
OFFLINE_SILENCES_MS = (250, 300, 350, 400, 450, 500, 600)
OFFLINE_MAX_S = 10.0  # one sentence each below this; the longer ones are speeches or sentence lists
FRAME_S = 0.020


@dataclass(frozen=True)
class Utterance:
    label: str
    audio: bytes  # 8 kHz mu-law, whole 20 ms frames
    source: str  # "recording" or "piper"

    @property
    def duration_s(self) -> float:
        return len(self.audio) / 8000


# == caller side (runs in the spawned process) ======================================================
@dataclass
class CallerSummary:
    """What one simulated caller measured; plain data so it crosses the process boundary."""

    call_sid: str
    response_latencies_s: list[float]
    first_audio_after_start_s: float | None
    duration_s: float
    closed_by_server: bool
    plays: list[tuple[str, float, int]]  # (label, seconds after start, frames) of each utterance spoken
    clears: int  # barge-ins the server acted on
    late_mid_sentence: int
    max_mid_sentence_gap_ms: float
    sentence_stalls: int
    unanswered: int
    error: str | None = None


def late_audio(received_messages: list[dict[str, Any]], frame_arrivals: list[float], lead_s: float) -> dict[str, Any]:
    """Where the caller's playback buffer ran dry while the bot was talking.

    The server sends each sentence as frames followed by a mark (`<label>#<turn>:<frames>`) and keeps about
    `lead_s` of audio buffered at the caller. Between two frames of one sentence, an arrival gap longer than
    the lead plus one frame means the buffer emptied: the caller heard a hole mid-sentence ("late").
    The same gap between two sentences of one reply is a stall (a pause between sentences, less bad).
    """
    threshold = lead_s + FRAME_S
    chunks: list[tuple[str | None, list[float]]] = []  # (turn id from the closing mark, arrivals)
    current: list[float] = []
    i = 0
    for msg in received_messages:
        event = msg.get("event")
        if event == "media":
            frames = max(1, len(base64.b64decode(msg["media"]["payload"])) // 160)
            current.extend(frame_arrivals[i : i + frames])
            i += frames
        elif event == "mark":
            name = msg["mark"]["name"]
            turn = name.rsplit(":", 1)[0].split("#")[-1] if "#" in name else None
            chunks.append((turn, current))
            current = []
        elif event == "clear":
            chunks.append((None, current))
            current = []
    if current:
        chunks.append((None, current))
    late = 0
    max_gap = 0.0
    stalls = 0
    prev_turn: str | None = None
    prev_last: float | None = None
    for turn, arrivals in chunks:
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        if gaps:
            max_gap = max(max_gap, max(gaps))
        late += sum(1 for g in gaps if g > threshold)
        if arrivals and prev_last is not None and turn is not None and turn == prev_turn:
            if arrivals[0] - prev_last > threshold:
                stalls += 1
        if arrivals:
            prev_last = arrivals[-1]
            prev_turn = turn
    return {"late_mid_sentence": late, "max_mid_sentence_gap_ms": round(max_gap * 1000, 1), "sentence_stalls": stalls}


async def _one_caller(
    ws_url: str, script: list[tuple[str, bytes]], delay_s: float, lead_s: float, reply_timeout_s: float
) -> CallerSummary:
    from telephony.simcaller import PlayAudio, SimulatedCaller, WaitForBot

    await asyncio.sleep(delay_s)
    caller = SimulatedCaller(ws_url, from_number=UNKNOWN_CALLER)
    # A patient caller: waits for a full second of quiet, so a short pause between two bot sentences is not
    # taken for the end of the reply (that would make the caller barge in).
    steps: list[Any] = [WaitForBot(timeout_s=30.0, quiet_s=1.0)]
    for label, audio in script:
        steps += [PlayAudio(audio, label), WaitForBot(timeout_s=reply_timeout_s, quiet_s=1.0)]
    try:
        result = await caller.run(steps)
    except Exception as exc:  # noqa: BLE001 - one failed caller is reported, the others still count
        return CallerSummary(
            caller.call_sid, [], None, 0.0, False, [], 0, 0.0, 0, 0, len(script), f"{type(exc).__name__}: {exc}"
        )
    frames_by_label = {label: len(audio) // 160 for label, audio in script}
    plays = []
    for entry in result.timeline:
        if entry.who == "caller" and entry.what.startswith("plays "):
            label = entry.what[len("plays ") :].rsplit(" (", 1)[0]
            plays.append((label, entry.t, frames_by_label.get(label, 0)))
    late = late_audio(result.received_messages, result.frame_arrivals, lead_s)
    return CallerSummary(
        call_sid=result.call_sid,
        response_latencies_s=list(result.response_latencies_s),
        first_audio_after_start_s=result.first_audio_after_start_s,
        duration_s=result.timeline[-1].t if result.timeline else 0.0,
        closed_by_server=result.closed_by_server,
        plays=plays,
        clears=result.clears,
        unanswered=max(0, len(script) - len(result.response_latencies_s)),
        **late,
    )


@dataclass(frozen=True)
class CallPlan:
    ws_url: str
    script: list[tuple[str, bytes]]
    delay_s: float = 0.0


async def _run_callers(plans: list[CallPlan], lead_s: float, reply_timeout_s: float) -> list[CallerSummary]:
    return list(
        await asyncio.gather(*(_one_caller(p.ws_url, p.script, p.delay_s, lead_s, reply_timeout_s) for p in plans))
    )


def callers_process_main(
    plans: list[CallPlan], lead_s: float, reply_timeout_s: float
) -> tuple[list[CallerSummary], float]:
    """Entry point of the caller process: the callers' summaries and the CPU seconds they used."""
    cpu0 = time.process_time()
    summaries = asyncio.run(_run_callers(plans, lead_s, reply_timeout_s))
    return summaries, time.process_time() - cpu0


# == server side ====================================================================================
class LoopLag:
    """How late a 10 ms sleep wakes up in the server's event loop: every stall a call's audio would feel."""

    def __init__(self, interval_s: float = 0.010) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(self.interval_s)
            self.samples.append(max(0.0, loop.time() - t - self.interval_s))

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.ensure_future(self._tick())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        s = self.samples
        return {
            "max_ms": round(max(s) * 1000, 1) if s else 0.0,
            "p99_ms": round(percentile(s, 99) * 1000, 1) if s else 0.0,
            "median_ms": round(statistics.median(s) * 1000, 2) if s else 0.0,
        }


@dataclass
class BenchServer:
    services: Any
    runner: Any
    crm_runner: Any
    ws_url: str

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.crm_runner.cleanup()
        await self.services.close()

    async def call_record(self, call_sid: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The call's record once its session has ended and queued writes have landed (None: never started)."""
        from ivr.storage import CallNotFound

        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        db = self.services.db
        while loop.time() < end:
            if call_sid not in self.services.sessions:
                await db.run(lambda: None)  # drain queued writes
                try:
                    record = await db.get_call(call_sid)
                except CallNotFound:
                    record = None
                if record is not None and record.get("ended_at"):
                    return record
            await asyncio.sleep(0.05)
        try:
            return await db.get_call(call_sid)
        except CallNotFound:
            return None


def closed_local_port() -> int:
    """A loopback port nobody listens on: Twilio REST calls fail at once instead of leaving the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(base: Settings, models: Any, data_dir: Path, **overrides: Any) -> BenchServer:

    from flows.demo_crm import start_demo_crm
    from ivr.app import build_app, start_site
    from ivr.services import build_all

    crm_runner, crm_url = await start_demo_crm("127.0.0.1", 0)
    values = base.model_dump()
    values.update(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        database_url=None,
        insecure_dev=True,
        twilio_auth_token=None,
        twilio_api_base_url=f"http://127.0.0.1:{closed_local_port()}",
        backends={"crm": BackendConfig(base_url=crm_url, timeout_s=2.0).model_dump()},
    )
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    settings = Settings.model_validate(values)
    services = await build_all(settings, models=models)
    runner, port = await start_site(build_app(services), "127.0.0.1", 0)
    services.set_public_url(f"http://127.0.0.1:{port}")
    return BenchServer(services, runner, crm_runner, f"ws://127.0.0.1:{port}/twilio/media")


# == utterances =====================================================================================
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


def scripts_for(n_callers: int, recordings_per_call: int, utterances: list[Utterance]) -> list[list[tuple[str, bytes]]]:
    """What each caller says: a Piper phrase the shipped flow understands, then real recordings.

    "Where is my parcel?" takes the ecommerce flow to "please say your order number", where the recordings
    (which are not order numbers) get re-asks instead of an early hand-over to an agent, so most utterances
    are answered whatever flow is loaded. Callers start at different points of the recording list.
    """
    phrases = [u for u in utterances if u.source == "piper"]
    recordings = [u for u in utterances if u.source == "recording"] or utterances
    k = len(recordings)
    scripts = []
    for c in range(n_callers):
        picked = phrases[:1] + [
            recordings[(c * recordings_per_call + j) % k] for j in range(min(recordings_per_call, k))
        ]
        scripts.append([(u.label, u.audio) for u in picked])
    return scripts


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


# == statistics =====================================================================================
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def _ms(values_s: list[float]) -> dict[str, float | int | None]:
    if not values_s:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values_s),
        "p50_ms": round(percentile(values_s, 50) * 1000, 1),
        "p95_ms": round(percentile(values_s, 95) * 1000, 1),
        "p99_ms": round(percentile(values_s, 99) * 1000, 1),
        "max_ms": round(max(values_s) * 1000, 1),
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def count_splits(record: dict[str, Any], plays: list[tuple[str, float, int]], silence_ms: int) -> list[int]:
    """Utterances the endpointer found in each spoken recording (1 is right; 2+ means it was split).

    An utterance's `end_frame` is its last voiced inbound frame; the caller sends one frame every 20 ms from
    the start, so a recording played at t covers frames t/0.02 .. t/0.02 + its length.
    """
    ends = [e["data"]["end_frame"] for e in record.get("events", []) if e["kind"] == "utterance"]
    counts = []
    slack = 10
    for _, t, frames in plays:
        first = int(t / FRAME_S)
        last = first + frames + silence_ms // 20
        counts.append(sum(1 for f in ends if first - slack <= f <= last + slack))
    return counts


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
    calls: list[tuple[BenchServer, list[tuple[str, bytes]]]],
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
    records = [await server.call_record(s.call_sid) for (server, _), s in zip(calls, summaries)]
    wall = time.monotonic() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    lag_stats = await lag.stop()
    cpu_s = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return RunOutcome(summaries, records, [server for server, _ in calls], cpu_s, caller_cpu, lag_stats, wall)


def summarize(run: RunOutcome, only: BenchServer | None = None) -> dict[str, Any]:
    """Everything measured for the calls of `run` (only those to `only`, if given)."""
    picked = [(s, r, srv) for s, r, srv in zip(run.summaries, run.records, run.servers) if only is None or srv is only]
    summaries = [s for s, _, _ in picked]
    latencies = [x for s in summaries for x in s.response_latencies_s]
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
        return {"median": _median(values), "p95": round(percentile(values, 95), 1) if values else None}

    return {
        "callers": len(summaries),
        "utterances_per_call": max((len(s.plays) for s in summaries), default=0),
        "response_latency": _ms(latencies),
        "unanswered_utterances": sum(s.unanswered for s in summaries),
        "server_turn_ms_median": {stage: _median(v) for stage, v in stages.items()},
        "asr_ms": dist(stages["asr"]),
        "tts_first_frame_ms": dist(stages["tts_first_frame"]),
        "first_greeting_ms": _ms(
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


# == codec ==========================================================================================
def codec_bench(pcm: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    """mu-law encode/decode speed of `audio.mulaw` next to stdlib `audioop`, per 20 ms frame and in bulk."""
    from audio import mulaw

    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop  # type: ignore[import-not-found]  # stdlib up to 3.12; `audioop-lts` after
    except ImportError:
        audioop = None

    pcm = np.ascontiguousarray(pcm, dtype=np.int16)
    pcm_bytes = pcm.tobytes()
    ulaw = mulaw.encode(pcm)
    frames_pcm = [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
    frames_pcm_bytes = [f.tobytes() for f in frames_pcm]
    frames_ulaw = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]

    def timed(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    cases: dict[str, Callable[[], Any]] = {
        "ours_encode_bulk": lambda: mulaw.encode(pcm),
        "ours_decode_bulk": lambda: mulaw.decode(ulaw),
        "ours_encode_frames": lambda: [mulaw.encode(f) for f in frames_pcm],
        "ours_decode_frames": lambda: [mulaw.decode(f) for f in frames_ulaw],
    }
    if audioop is not None:
        cases |= {
            # Like for like: audioop works on bytes, ours returns a numpy array, so decode includes np.frombuffer.
            "audioop_encode_bulk": lambda: audioop.lin2ulaw(pcm_bytes, 2),
            "audioop_decode_bulk": lambda: np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16),
            "audioop_encode_frames": lambda: [audioop.lin2ulaw(f, 2) for f in frames_pcm_bytes],
            "audioop_decode_frames": lambda: [
                np.frombuffer(audioop.ulaw2lin(f, 2), dtype=np.int16) for f in frames_ulaw
            ],
        }
    seconds = {name: timed(fn) for name, fn in cases.items()}
    samples = len(pcm)
    out: dict[str, Any] = {
        "audio_s": round(samples / 8000, 1),
        "repeats": repeats,
        "audioop": "missing" if audioop is None else getattr(audioop, "__file__", "builtin"),
        "bit_exact_with_audioop": None
        if audioop is None
        else (audioop.lin2ulaw(pcm_bytes, 2) == ulaw and audioop.ulaw2lin(ulaw, 2) == mulaw.decode(ulaw).tobytes()),
    }
    for name, s in seconds.items():
        if name.endswith("bulk"):
            # MB/s of mu-law bytes (one per sample) processed.
            out[name.replace("_bulk", "_bulk_MB_s")] = round(samples / s / 1e6, 1)
        else:
            out[name.replace("_frames", "_frames_per_s")] = round(len(frames_pcm) / s)
    if audioop is not None:
        out["ratio_ours_over_audioop"] = {
            kind: round(seconds[f"audioop_{kind}"] / seconds[f"ours_{kind}"], 2)
            for kind in ("encode_bulk", "decode_bulk", "encode_frames", "decode_frames")
        }
    return out


# == the whole run ==================================================================================
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def print_level_table(levels: list[dict[str, Any]], title: str, out: Callable[[str], None] = print) -> None:
    out(f"\n{title}")
    header = (
        f"{'callers':>7} {'turns':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'asr ms':>7} {'tts1 ms':>7} "
        f"{'greet ms':>8} {'lag max':>7} {'lag p99':>7} {'cpu/min':>7} {'late':>4} {'stalls':>6} {'split':>5}"
    )
    out(header)
    out("-" * len(header))
    for lv in levels:
        r = lv["response_latency"]
        out(
            f"{lv['callers']:>7} {r['n']:>5} {_fmt(r['p50_ms']):>7} {_fmt(r['p95_ms']):>7} {_fmt(r['p99_ms']):>7} "
            f"{_fmt(lv['asr_ms']['median']):>7} {_fmt(lv['tts_first_frame_ms']['median']):>7} "
            f"{_fmt(lv['first_greeting_ms']['p50_ms']):>8} {_fmt(lv['event_loop_lag']['max_ms']):>7} "
            f"{_fmt(lv['event_loop_lag']['p99_ms']):>7} {_fmt(lv['server_cpu_s_per_call_minute']):>7} "
            f"{lv['late_audio_mid_sentence']:>4} {lv['sentence_stalls']:>6} {lv['recordings_split']:>5}"
        )


def _phone_pcm_for_codec(utterances: list[Utterance], seconds: float = 60.0) -> np.ndarray:
    from audio import mulaw

    speech = np.concatenate([mulaw.decode(u.audio) for u in utterances])
    reps = int(np.ceil(seconds * 8000 / max(1, len(speech))))
    return np.tile(speech, reps)[: int(seconds * 8000)]


async def run_bench(
    settings: Settings,
    *,
    out: Path,
    max_callers: int = 20,
    quick: bool = False,
    models: Any = None,
    speech_dir: Path = SPEECH_DIR,
) -> int:
    """Runs the benchmark, prints tables, writes `out` (JSON). Returns the exit code (0: it ran).

    `models` lets a caller that already loaded Whisper and Piper (tests) share them.
    """

    # The bench measures the server, not its logs: per-call INFO lines would only add noise and CPU.
    quiet = {name: logging.getLogger(name).level for name in ("ivr", "aiohttp.access", "faster_whisper")}
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).getEffectiveLevel()))
    try:
        return await _run_bench(
            settings, out=out, max_callers=max_callers, quick=quick, models=models, speech_dir=speech_dir
        )
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


async def _run_bench(
    settings: Settings, *, out: Path, max_callers: int, quick: bool, models: Any, speech_dir: Path
) -> int:
    from ivr.services import Models

    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
        tmp_dir = Path(tmp)
        owns_models = models is None
        if models is None:
            print("loading models ...", flush=True)
            load_settings = settings.model_copy(update={"data_dir": tmp_dir / "models"})
            t = time.monotonic()
            models = await asyncio.to_thread(Models.load, load_settings)
            print(f"models loaded in {time.monotonic() - t:.1f} s", flush=True)
        utterances = await asyncio.to_thread(load_utterances, models.tts.synth.synthesize_phone, speech_dir)
        print(
            "caller speech: " + ", ".join(f"{u.label} ({u.duration_s:.1f} s)" for u in utterances),
            flush=True,
        )

        codec = await asyncio.to_thread(
            codec_bench, _phone_pcm_for_codec(utterances, 10.0 if quick else 60.0), 3 if quick else 7
        )
        levels_to_run = [1, 2] if quick else [n for n in FULL_LEVELS if n <= max_callers] or [1]
        if not quick and max_callers > 1 and max_callers not in levels_to_run:
            levels_to_run.append(max_callers)

        sweep: list[dict[str, Any]] = []
        endpoint_sweep: list[dict[str, Any]] = []
        # Spawned, not forked: this process holds model threads that a fork would copy in a broken state.
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            server = await start_server(settings, models, tmp_dir / "data")
            try:
                default_silence = server.services.settings.audio.endpoint_silence_ms
                for n in levels_to_run:
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
                        f"  p50 {_fmt(r['p50_ms'])} ms, p95 {_fmt(r['p95_ms'])} ms, late audio "
                        f"{level['late_audio_mid_sentence']}, unanswered {level['unanswered_utterances']}, {level['wall_s']} s",
                        flush=True,
                    )
                    if level["caller_errors"]:
                        print(f"  caller errors: {level['caller_errors'][:3]}", flush=True)
                    # N=1 is the baseline: the sweep always goes on to the next level to show the trend.
                    if not quick and n > 1 and not _level_ok(level):
                        print("  over the limit: the sweep stops here", flush=True)
                        break
            finally:
                await server.close()

            if not quick:
                # One caller per endpointing value, all at once (each on its own server): the values are
                # compared under the same load, and the whole sweep takes one call's time.
                print(f"\nendpoint silence sweep {ENDPOINT_SILENCES_MS} ms, 1 caller each ...", flush=True)
                servers = [
                    await start_server(settings, models, tmp_dir / f"data-ep{v}", audio={"endpoint_silence_ms": v})
                    for v in ENDPOINT_SILENCES_MS
                ]
                try:
                    # The four longest short recordings (the likeliest to hold a pause); the offline check below
                    # covers every recording, so the live calls stay short enough for `make bench` to last < 5 min.
                    longest = sorted((u for u in utterances if u.source == "recording"), key=lambda u: u.duration_s)[
                        -4:
                    ]
                    script = scripts_for(1, len(longest), [u for u in utterances if u.source == "piper"] + longest)[0]
                    run = await run_calls(pool, [(srv, script) for srv in servers], stagger_s=1.0)
                finally:
                    for srv in servers:
                        await srv.close()
                for value, srv in zip(ENDPOINT_SILENCES_MS, servers):
                    part = summarize(run, only=srv)
                    endpoint_sweep.append(
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
        offline = (
            [] if quick else await asyncio.to_thread(offline_endpoint_check, settings, OFFLINE_SILENCES_MS, speech_dir)
        )
        if owns_models:
            await models.close()

    single = sweep[0]
    good = [lv["callers"] for lv in sweep if _level_ok(lv)]
    # The largest N that passed with every smaller level passing too.
    max_ok = 0
    for lv in sweep:
        if not _level_ok(lv):
            break
        max_ok = lv["callers"]
    offline_ok = {
        e["endpoint_silence_ms"] for e in offline if e["recordings_split"] == 0 and e["recordings_missed"] == 0
    }
    never_split = [
        e["endpoint_silence_ms"]
        for e in endpoint_sweep
        if e["recordings_split"] == 0
        and e["recordings_missed"] == 0
        and (not offline or e["endpoint_silence_ms"] in offline_ok)
    ]
    level20 = next((lv for lv in sweep if lv["callers"] == 20), None)
    sr = single["response_latency"]
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "single_call": single,
        "sweep": sweep,
        "max_callers_under_1_2s": max_ok,
        "levels_passing": good,
        "codec": codec,
        "endpoint_sweep": endpoint_sweep,
        "endpoint_offline": offline,
        "recommended_endpoint_silence_ms": min(never_split) if never_split else None,
        "targets": {
            "p50_ms<=700": sr["p50_ms"] is not None and sr["p50_ms"] <= 700,
            "p95_ms<=900": sr["p95_ms"] is not None and sr["p95_ms"] <= 900,
            # None: 20 callers were not attempted (quick mode, --max-callers < 20); False: failed or stopped before.
            "20_callers_p95<=1200": (
                None if quick or max_callers < 20 else bool(level20 is not None and _level_ok(level20))
            ),
        },
        "bench_wall_s": round(time.monotonic() - t_start, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print_summary(results)
    print(f"\nwrote {out} ({results['bench_wall_s']} s)")
    return 0


def _level_ok(level: dict[str, Any]) -> bool:
    p95 = level["response_latency"]["p95_ms"]
    return (
        p95 is not None and p95 <= P95_LIMIT_MS and level["late_audio_mid_sentence"] == 0 and not level["caller_errors"]
    )


def _print_summary(results: dict[str, Any], out: Callable[[str], None] = print) -> None:
    print_level_table(
        results["sweep"], "concurrency sweep (response latency = caller's last voiced frame -> first reply frame)", out
    )
    out(f"\nlargest N with p95 <= {P95_LIMIT_MS:.0f} ms and no late audio: {results['max_callers_under_1_2s']}")
    if results["endpoint_sweep"]:
        out("\nendpointing silence sweep (1 caller, recordings only)")
        out(
            f"{'silence ms':>10} {'p50 ms':>7} {'p95 ms':>7} {'endpoint ms':>11} {'spoken':>6} {'split':>5} {'missed':>6}"
        )
        for e in results["endpoint_sweep"]:
            r = e["response_latency"]
            out(
                f"{e['endpoint_silence_ms']:>10} {_fmt(r['p50_ms']):>7} {_fmt(r['p95_ms']):>7} "
                f"{_fmt(e['server_endpoint_wait_ms_median']):>11} {e['recordings_spoken']:>6} {e['recordings_split']:>5} "
                f"{e['recordings_missed']:>6}"
            )
        for e in results.get("endpoint_offline", []):
            out(
                f"offline, {e['recordings']} recordings under {OFFLINE_MAX_S:.0f} s at {e['endpoint_silence_ms']} ms: "
                f"{e['recordings_split']} split {e['split']}, {e['recordings_missed']} missed"
            )
        out(
            "recommended endpoint_silence_ms (smallest that split no recording, live or offline): "
            f"{results['recommended_endpoint_silence_ms']}"
        )
    c = results["codec"]
    out(f"\nmu-law codec ({c['audio_s']} s of speech, median of {c['repeats']}; audioop: {c['audioop']})")
    out(f"{'':16} {'audio.mulaw':>14} {'audioop':>14} {'ratio':>7}")
    for kind, unit in (
        ("encode_bulk", "MB_s"),
        ("decode_bulk", "MB_s"),
        ("encode_frames", "per_s"),
        ("decode_frames", "per_s"),
    ):
        ours = c.get(f"ours_{kind}_{unit}")
        theirs = c.get(f"audioop_{kind}_{unit}")
        ratio = c.get("ratio_ours_over_audioop", {}).get(kind)
        label = f"{kind} ({'MB/s' if unit == 'MB_s' else 'frames/s'})"
        out(f"{label:16} {_fmt(ours):>14} {_fmt(theirs):>14} {_fmt(ratio):>7}")
    out(f"\ntargets: {results['targets']}")
