"""AsrService: recognition off the event loop, bounded queue, clean cancellation."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from models.asr import AsrOverloaded, AsrService
from models.asr_text import normalize_transcript

pytestmark = pytest.mark.slow

PHRASE = "cmusphinx__005.wav"  # 3.5 s
SENTENCE = "coqui-ai__LJ001-0001.wav"  # 9.7 s


async def _wait_idle(service: AsrService, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while service.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert service.pending == 0


async def test_two_calls_are_transcribed_while_the_loop_stays_responsive(asr_transcriber, phone_recording):
    phrase, phrase_ref = phone_recording(PHRASE)
    sentence, _ = phone_recording(SENTENCE)
    service = AsrService(asr_transcriber, workers=2, queue_size=4)
    max_lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal max_lag
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            max_lag = max(max_lag, loop.time() - before - 0.005)

    tick = asyncio.create_task(ticker())
    try:
        a, b = await asyncio.gather(service.transcribe(phrase, "CA-one"), service.transcribe(sentence, "CA-two"))
    finally:
        stop.set()
        await tick
        await service.close()
    assert normalize_transcript(a.text).startswith("eight of spades")
    assert "printing" in normalize_transcript(b.text)
    assert max_lag < 0.1, f"event loop stalled for {max_lag * 1000:.0f} ms during ASR"


async def test_overload_is_refused_at_once_and_accepted_work_finishes(asr_transcriber, phone_recording):
    sentence, _ = phone_recording(SENTENCE)
    service = AsrService(asr_transcriber, workers=1, queue_size=1)
    try:
        running = asyncio.create_task(service.transcribe(sentence, "CA-1"))
        waiting = asyncio.create_task(service.transcribe(sentence, "CA-2"))
        await asyncio.sleep(0)  # both submitted: one running, one waiting
        assert service.pending == 2
        started = time.monotonic()
        with pytest.raises(AsrOverloaded):
            await service.transcribe(sentence, "CA-3")
        assert time.monotonic() - started < 0.05  # refused, not queued behind the others
        results = await asyncio.gather(running, waiting)
        assert all("printing" in normalize_transcript(r.text) for r in results)
        assert service.pending == 0
        assert (await service.transcribe(sentence[: 16000 * 3], "CA-4")).text  # room again
    finally:
        await service.close()


async def test_cancelled_callers_do_not_wedge_the_pool(asr_transcriber, phone_recording):
    sentence, _ = phone_recording(SENTENCE)
    phrase, _ = phone_recording(PHRASE)
    service = AsrService(asr_transcriber, workers=1, queue_size=2)
    try:
        tasks = [asyncio.create_task(service.transcribe(sentence, f"CA-{i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        await _wait_idle(service)  # the running job ends, the waiting ones are dropped
        result = await asyncio.wait_for(service.transcribe(phrase, "CA-next"), timeout=20)
        assert normalize_transcript(result.text).startswith("eight of spades")
    finally:
        await service.close()


async def test_bad_audio_fails_that_call_only(asr_transcriber, phone_recording):
    phrase, _ = phone_recording(PHRASE)
    service = AsrService(asr_transcriber, workers=1, queue_size=2)
    try:
        with pytest.raises(ValueError):
            await service.transcribe(np.zeros((2, 8000), dtype=np.float32), "CA-bad")
        assert service.pending == 0
        assert normalize_transcript((await service.transcribe(phrase, "CA-good")).text).startswith("eight")
    finally:
        await service.close()
    with pytest.raises(RuntimeError):
        await service.transcribe(phrase, "CA-late")
