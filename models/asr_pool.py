"""Whisper in worker processes: the `Transcriber` interface, each utterance run in one of `processes` spawned
processes that each load the model once.

In-process, CTranslate2 releases the GIL while it computes, but feature extraction, the decode loop's Python
and the server's own frame work (VAD, endpointing, JSON, base64 for every 20 ms of every call) still share one
interpreter; with many calls the event loop and recognition queue behind each other. Worker processes give the
server's interpreter a core of its own and run utterances side by side, one CTranslate2 thread each
(`AsrConfig.cpu_threads`), with no oversubscription on a small machine. The workers can run at a lower priority
(`AsrConfig.process_nice`; CTranslate2 computes on threads of its own, so only a process can be reniced), but on
the shared 2-core machine niceness 5 made 10 and 20 callers slower and stall more than 0 (bench, back to back),
so the default is 0.
`AsrService` drives this exactly as it drives an in-process `Transcriber` (`IVR_ASR__PROCESSES=2`).
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from models.asr import AsrConfig, Transcriber, Transcript

log = logging.getLogger(__name__)

_worker: Transcriber | None = None  # the one model of a worker process (set by its initializer)


def _load(cfg: AsrConfig) -> None:
    global _worker  # noqa: PLW0603 - per-process model, loaded once by the pool's initializer
    # Ctrl-C reaches the whole process group: the server drains and then closes its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.process_nice:
        os.nice(cfg.process_nice)
    _worker = Transcriber(cfg)


def _transcribe(audio: np.ndarray, kwargs: dict[str, Any]) -> tuple[Transcript, float]:
    assert _worker is not None, "worker process without a model"
    cpu0 = time.process_time()
    result = _worker.transcribe(audio, **kwargs)
    return result, time.process_time() - cpu0


def _ready() -> bool:
    return _worker is not None


class ProcessTranscriber:
    """`Transcriber.transcribe` run in worker processes; blocking like the original (call it from a thread)."""

    def __init__(self, cfg: AsrConfig, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.cfg = cfg
        self.processes = processes
        self._lock = threading.Lock()
        self._cpu_s = 0.0
        self.restarts = 0
        self._pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        # Spawned, not forked: the parent may already hold model and loop threads that a fork would copy broken.
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load,
            initargs=(self.cfg.model_copy(update={"workers": 1}),),
        )
        # Load every worker's model now: the first caller must not wait for a model load.
        for ready in [pool.submit(_ready) for _ in range(self.processes)]:
            ready.result()
        return pool

    def transcribe(self, audio: np.ndarray, **kwargs: Any) -> Transcript:
        """Same arguments and result as `Transcriber.transcribe` (keywords are passed on unchanged).

        A worker that dies (killed, out of memory) breaks the whole pool: it is started again once and the
        utterance retried, so one lost process costs a model load, not every later call's recognition.
        """
        audio = np.ascontiguousarray(audio)
        pool = self._pool
        try:
            result, cpu_s = pool.submit(_transcribe, audio, kwargs).result()
        except concurrent.futures.process.BrokenProcessPool:
            log.error("an ASR worker process died; starting the pool again")
            with self._lock:
                if self._pool is pool:  # one restart, however many threads saw the same broken pool
                    self._pool = self._start()
                    self.restarts += 1
            result, cpu_s = self._pool.submit(_transcribe, audio, kwargs).result()
        with self._lock:
            self._cpu_s += cpu_s
        return result

    def take_cpu_s(self) -> float:
        """CPU seconds the workers spent recognising since the last call (the bench adds them to the server's)."""
        with self._lock:
            spent, self._cpu_s = self._cpu_s, 0.0
        return spent

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
