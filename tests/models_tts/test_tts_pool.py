"""Piper in worker processes (models/tts_pool.py): the same audio as in-process, renderings side by side
through `TtsService`, the workers' CPU time accounted, and a dead worker replaced."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from models.tts import Synthesizer, TtsConfig, TtsService
from models.tts_pool import ProcessSynthesizer

pytestmark = pytest.mark.slow

SENTENCES = ("Your parcel left our warehouse this morning.", "I have noted that you said ten of clubs.")
SAME_EVERY_TIME = TtsConfig(deterministic=True)  # no generator noise: equal audio means the same rendering


@pytest.fixture(scope="module")
def pooled():
    voice = ProcessSynthesizer(SAME_EVERY_TIME, processes=2)
    yield voice
    voice.close()


async def test_worker_processes_say_exactly_what_the_in_process_voice_says(pooled) -> None:
    local = Synthesizer(SAME_EVERY_TIME)
    service = TtsService(pooled, workers=2)
    try:
        rendered = await asyncio.gather(*(service.render_sentence(s) for s in SENTENCES))
    finally:
        await service.close()
    assert rendered == [local.synthesize_phone(s) for s in SENTENCES]
    assert pooled.voice_name == local.voice_name  # one prompt cache serves both
    assert pooled.take_cpu_s() > 0
    assert pooled.take_cpu_s() == 0.0  # taken once
    assert pooled.render_estimate_s(SENTENCES[0]) > 0


def test_a_worker_that_dies_is_replaced_and_the_sentence_still_rendered() -> None:
    from ivr.metrics import Metrics

    voice = ProcessSynthesizer(SAME_EVERY_TIME, processes=1)
    metrics = Metrics()
    metrics.model_workers("tts", lambda: voice.workers.restarts)
    try:
        before = voice.synthesize_phone(SENTENCES[0])
        (pid,) = voice.workers.pids  # the worker process
        os.kill(pid, signal.SIGKILL)
        assert voice.synthesize_phone(SENTENCES[0]) == before
        assert voice.workers.restarts == 1
        assert 'ivr_model_worker_restarts{model="tts"} 1.0' in metrics.render().decode()
    finally:
        voice.close()
