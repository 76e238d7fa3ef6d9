"""Whisper in worker processes (models/asr_pool.py): the same words as in-process, two utterances at once,
keywords passed through, and the workers' CPU time accounted."""

from __future__ import annotations

import asyncio

import pytest

from models.asr import AsrConfig, AsrService
from models.asr_pool import ProcessTranscriber

pytestmark = pytest.mark.slow

RECORDINGS = ("cmusphinx__001.wav", "coqui-ai__LJ001-0013.wav")


@pytest.fixture(scope="module")
def pool_transcriber():
    transcriber = ProcessTranscriber(AsrConfig(cpu_threads=1), processes=2)
    yield transcriber
    transcriber.close()


async def test_worker_processes_hear_what_the_in_process_model_hears(
    pool_transcriber, asr_transcriber, phone_recording
):
    service = AsrService(pool_transcriber, workers=2)
    audios = [phone_recording(name)[0] for name in RECORDINGS]
    pooled = await asyncio.gather(*(service.transcribe(a, f"CA{i}") for i, a in enumerate(audios)))
    await service.close()

    for audio, result in zip(audios, pooled, strict=True):
        local = asr_transcriber.transcribe(audio)
        assert result.text == local.text and result.text
        assert result.path == local.path
    assert pool_transcriber.take_cpu_s() > 0
    assert pool_transcriber.take_cpu_s() == 0.0  # taken once


def test_keywords_reach_the_worker(pool_transcriber, phone_recording):
    audio, _ = phone_recording(RECORDINGS[0])
    assert pool_transcriber.transcribe(audio, fast=False).path == "padded"
    with pytest.raises(TypeError):
        pool_transcriber.transcribe(audio, no_such_option=True)


def test_a_worker_that_dies_is_replaced_and_the_utterance_still_transcribed(phone_recording):
    import os
    import signal

    transcriber = ProcessTranscriber(AsrConfig(cpu_threads=1), processes=1)
    try:
        audio, _ = phone_recording(RECORDINGS[0])
        before = transcriber.transcribe(audio).text
        (pid,) = transcriber.workers.pids  # the worker process
        os.kill(pid, signal.SIGKILL)
        assert transcriber.transcribe(audio).text == before
        assert transcriber.workers.restarts == 1
    finally:
        transcriber.close()


def test_worker_processes_keep_numpy_blas_to_one_thread(pool_transcriber):
    """OpenBLAS's spinning helper thread doubled each utterance's CPU time (models/blas.py)."""
    from models.blas import blas_threads

    assert [pool_transcriber.workers.run(blas_threads) for _ in range(4)] == [1, 1, 1, 1]
