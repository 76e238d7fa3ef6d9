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

import os
import signal
from typing import Any

import numpy as np

from models.asr import AsrConfig, Transcriber, Transcript
from models.worker_pool import WorkerProcesses

_worker: Transcriber | None = None  # the one model of a worker process (set by its initializer)


def _load(cfg: AsrConfig) -> None:
    global _worker  # noqa: PLW0603 - per-process model, loaded once by the pool's initializer
    # Ctrl-C reaches the whole process group: the server drains and then closes its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.process_nice:
        os.nice(cfg.process_nice)
    _worker = Transcriber(cfg)


def _transcribe(audio: np.ndarray, kwargs: dict[str, Any]) -> Transcript:
    assert _worker is not None, "worker process without a model"
    return _worker.transcribe(audio, **kwargs)


def _ready() -> bool:
    return _worker is not None


class ProcessTranscriber:
    """`Transcriber.transcribe` run in worker processes; blocking like the original (call it from a thread).
    A worker that dies is replaced once and the utterance transcribed again (`models/worker_pool.py`)."""

    def __init__(self, cfg: AsrConfig, processes: int) -> None:
        self.cfg = cfg
        self.processes = processes
        self.workers = WorkerProcesses(processes, _load, (cfg.model_copy(update={"workers": 1}),), _ready, name="ASR")

    def transcribe(self, audio: np.ndarray, **kwargs: Any) -> Transcript:
        """Same arguments and result as `Transcriber.transcribe` (keywords are passed on unchanged)."""
        return self.workers.run(_transcribe, np.ascontiguousarray(audio), kwargs)

    def take_cpu_s(self) -> float:
        """CPU seconds the workers spent recognising since the last call (the bench adds them to the server's)."""
        return self.workers.take_cpu_s()

    def close(self) -> None:
        self.workers.close()
