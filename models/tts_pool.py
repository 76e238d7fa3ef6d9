"""Piper in worker processes: the part of `Synthesizer` that `TtsService` uses, each rendering run in one of
`processes` spawned processes that each load the voice once.

In-process, onnxruntime releases the GIL while the voice model runs, but Piper's phonemiser, its Python
around each run and the conversion to 8 kHz mu-law hold it, and so does the server's frame work for every call
(JSON, base64, VAD every 20 ms). With tens of calls, renderings and frames queue behind one interpreter. In
worker processes the renderings run beside the server's interpreter, as Whisper's do (`models/asr_pool.py`); a
rendering crosses the process boundary as text one way and a few kB of mu-law back. Back to back at 20 and 40
callers (`IVR_TTS__PROCESSES=0|2 python -m bench --levels 20,40 --no-extras`): reply stalls 27 / 232 on threads,
15 / 94 in processes; the event loop's longest lag 396 ms, then 193 ms.
"""

from __future__ import annotations

import signal
import threading
import time

from models.tts import Synthesizer, TtsConfig
from models.worker_pool import WorkerProcesses

_voice: Synthesizer | None = None  # the one voice of a worker process (set by its initializer)


def _load(cfg: TtsConfig) -> None:
    global _voice  # noqa: PLW0603 - per-process voice, loaded once by the pool's initializer
    # Ctrl-C reaches the whole process group: the server drains and then closes its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _voice = Synthesizer(cfg)


def _render(sentence: str) -> bytes:
    assert _voice is not None, "worker process without a voice"
    return _voice.synthesize_phone(sentence)


def _voice_name() -> str:
    assert _voice is not None, "worker process without a voice"
    return _voice.voice_name


class ProcessSynthesizer:
    """`Synthesizer.synthesize_phone` run in worker processes; blocking like the original (call it from a
    thread: `TtsService` does). A worker that dies is replaced once and the sentence rendered again."""

    def __init__(self, cfg: TtsConfig, processes: int) -> None:
        self.cfg = cfg
        self.processes = processes
        self._lock = threading.Lock()
        self._s_per_char = 0.006  # as `Synthesizer`: one thread on the 2-core machine, idle
        self.synth_calls = 0
        self.workers = WorkerProcesses(processes, _load, (cfg,), _voice_name, name="TTS")
        self.voice_name: str = self.workers.run(_voice_name)

    def render_estimate_s(self, text: str) -> float:
        """About how long rendering `text` takes now (from recent renderings, the trip to the worker included)."""
        return self._s_per_char * len(text)

    def synthesize_phone(self, sentence: str) -> bytes:
        started = time.monotonic()
        audio = self.workers.run(_render, sentence)
        elapsed = time.monotonic() - started
        with self._lock:
            self.synth_calls += 1
            if sentence:
                self._s_per_char += 0.2 * (elapsed / len(sentence) - self._s_per_char)
        return audio

    def take_cpu_s(self) -> float:
        """CPU seconds the workers spent rendering since the last call (the bench adds them to the server's)."""
        return self.workers.take_cpu_s()

    def close(self) -> None:
        self.workers.close()
