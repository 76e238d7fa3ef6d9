"""The whole benchmark run: models, caller speech, codec speed, the sweeps, the results file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.endpointing import OFFLINE_SILENCES_MS, offline_endpoint_check
from bench.load import SweepOptions, admission_check, concurrency_sweep, endpoint_sweep, peer_comparison
from bench.mulaw_speed import mulaw_speed, phone_speech_pcm
from bench.report import build_results, print_summary
from bench.speech import SPEECH_DIR, load_utterances
from bench.turn_end_check import offline_turn_end_check
from ivr.config import Settings


async def run_bench(
    settings: Settings,
    *,
    out: Path,
    options: SweepOptions | None = None,
    quick: bool = False,
    extras: bool = True,
    peer: bool = False,
    models: Any = None,
    speech_dir: Path = SPEECH_DIR,
) -> int:
    """Runs the benchmark, prints tables, writes `out` (JSON). Returns the exit code (0: it ran).

    `extras`: also the codec speed, the endpointing-silence sweep and the offline endpointing check.
    `models` lets a caller that already loaded Whisper and Piper (tests) share them.
    """

    # The bench measures the server, not its logs: per-call INFO lines would only add noise and CPU.
    quiet = {name: logging.getLogger(name).level for name in ("ivr", "aiohttp.access", "faster_whisper")}
    for name in quiet:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).getEffectiveLevel()))
    try:
        return await _run_bench(
            settings,
            out=out,
            options=options or SweepOptions(),
            quick=quick,
            extras=extras and not quick,
            peer=peer and not quick,
            models=models,
            speech_dir=speech_dir,
        )
    finally:
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


async def _run_bench(
    settings: Settings,
    *,
    out: Path,
    options: SweepOptions,
    quick: bool,
    extras: bool,
    peer: bool,
    models: Any,
    speech_dir: Path,
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

        codec = (
            await asyncio.to_thread(mulaw_speed, phone_speech_pcm(utterances, 60.0), 7)
            if extras
            else await asyncio.to_thread(mulaw_speed, phone_speech_pcm(utterances, 10.0), 3)
        )
        if quick:
            options = SweepOptions(levels=(1, 2), turns=1, caller_processes=1)

        # Spawned, not forked: this process holds model threads that a fork would copy in a broken state.
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=options.caller_processes, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            sweep = await concurrency_sweep(pool, settings, models, tmp_dir / "data", utterances, options, quick=quick)
            endpoints = await endpoint_sweep(pool, settings, models, tmp_dir, utterances) if extras else []
            versus = await peer_comparison(pool, settings, models, tmp_dir, utterances, options) if peer else None
            admission = (
                await admission_check(pool, settings, models, tmp_dir, utterances, options, sweep) if extras else None
            )
        offline = (
            await asyncio.to_thread(offline_endpoint_check, settings, OFFLINE_SILENCES_MS, speech_dir) if extras else []
        )
        turn_end = (
            await asyncio.to_thread(offline_turn_end_check, settings, models.asr.transcriber, speech_dir)
            if extras
            else None
        )
        if owns_models:
            await models.close()

    results = build_results(
        sweep=sweep,
        codec=codec,
        endpoint_sweep=endpoints,
        offline=offline,
        turn_end=turn_end,
        admission=admission,
        peer=versus,
        quick=quick,
        wall_s=time.monotonic() - t_start,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_summary(results)
    print(f"\nwrote {out} ({results['bench_wall_s']} s)")
    return 0
