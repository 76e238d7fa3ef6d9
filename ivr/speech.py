"""Speech: the bot's side of the call. It owns the queue of replies, renders them sentence by sentence
into the `Playout` pacer, and can be interrupted and resumed exactly where it was cut.

A reply is rendered one sentence at a time: the first plays while the next is made, and an interruption
knows exactly which sentences were never synthesised. The first sentence is cut after its opening clause
(`split_first_clause`), so the caller hears the reply start after a clause's rendering, not a sentence's; a
sentence that begins with a template's fixed words ("Thanks, I have noted that you said ...") is cut after
them, and they come from the prompt cache (`LeadIns`), as fixed prompts do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ivr.call_log import CallLog
from ivr.clock import Clock
from ivr.playout import Cut, Playout, TurnAudio
from models.speech_text import LeadIns, normalize_for_speech, split_first_clause, split_sentences
from telephony.events import OutboundCommand

FirstFrame = Callable[[float], None]
Spawn = Callable[[Awaitable[None], str], "asyncio.Task[None]"]


class Synthesis(Protocol):
    """What speech needs from TTS (`models.tts.TtsService`)."""

    lead_ins: LeadIns

    def cached(self, text: str) -> bytes | None: ...

    async def render_sentence(self, sentence: str, *, due_in_s: float = 0.0) -> bytes: ...


@dataclass(slots=True)
class SpeechJob:
    text: str
    prompt_id: str | None = None
    prefix_audio: bytes = b""  # resumed audio of an interrupted reply
    sentences: list[str] = field(default_factory=list)  # filled when synthesis starts
    sentences_done: int = 0
    label: str = "say"
    on_first_frame: FirstFrame | None = None


@dataclass(frozen=True, slots=True)
class Interruption:
    """What the caller had not heard when the bot was cut: audio already made, sentences not yet rendered,
    replies still queued. `resume` plays it from exactly there."""

    cut: Cut | None
    unheard: tuple[SpeechJob, ...]


class Speech:
    def __init__(
        self,
        tts: Synthesis,
        send: Callable[[OutboundCommand], Awaitable[None]],
        clock: Clock,
        call: CallLog,
        *,
        spawn: Spawn,
        lead_ms: int,
        chunk_ms: int,
        on_first_audio: FirstFrame,
    ) -> None:
        self._tts = tts
        self._call = call
        self._spawn = spawn
        self._clock = clock
        self._on_first_audio = on_first_audio
        self._jobs: asyncio.Queue[SpeechJob] = asyncio.Queue()
        self._current: SpeechJob | None = None
        self._task: asyncio.Task[None] | None = None
        self._first_frame_waiters: dict[int, FirstFrame] = {}
        self._heard_anything = False
        self.tts_failures = 0  # syntheses failed in a row
        self.on_tts_failure: Callable[[int], None] | None = None  # told the count after each failure
        self.playout = Playout(
            send,
            lead_ms=lead_ms,
            chunk_ms=chunk_ms,
            clock=clock.now,
            sleep=clock.sleep,
            on_sent=self._audio_sent,
            log=call.log,
        )

    @property
    def is_playing(self) -> bool:
        return self.playout.is_playing

    def start(self) -> None:
        self.playout.log = self._call.log
        self._spawn(self.playout.run(), "playout")
        self._task = self._spawn(self._speak(), "speech")

    def say(self, text: str, *, prompt_id: str | None = None, on_first_frame: FirstFrame | None = None) -> None:
        self._jobs.put_nowait(SpeechJob(text=text, prompt_id=prompt_id, on_first_frame=on_first_frame))

    def mark_played(self, name: str) -> bool:
        """A mark echo from the carrier; True when it means playback has now finished."""
        return self.playout.on_mark(name) and not self.playout.is_playing

    async def interrupt(self) -> Interruption:
        """Stops the bot mid-sentence: stop synthesis, clear the carrier's buffer and ours."""
        pending: list[SpeechJob] = []
        while not self._jobs.empty():
            pending.append(self._jobs.get_nowait())
            self._jobs.task_done()
        job = self._current
        unsynthesised = job.sentences[job.sentences_done :] if job is not None else []
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        cut = await self.playout.clear()
        self._first_frame_waiters.clear()
        self._task = self._spawn(self._speak(), "speech")
        unheard: list[SpeechJob] = []
        if cut is not None and (cut.unplayed or unsynthesised):
            unheard.append(SpeechJob(text="", prefix_audio=cut.unplayed, sentences=unsynthesised, label="resume"))
        return Interruption(cut, tuple(unheard + pending))

    def resume(self, interruption: Interruption) -> None:
        for job in interruption.unheard:
            self._jobs.put_nowait(job)

    async def finished(self, *, limit_s: float = 30.0) -> None:
        """Every queued reply rendered and played out (a goodbye before hanging up)."""
        await self._jobs.join()
        deadline = self._clock.now() + limit_s
        while self.playout.is_playing and self._clock.now() < deadline:
            await self._clock.sleep(0.05)

    async def _speak(self) -> None:
        while True:
            job = await self._jobs.get()
            self._current = job
            try:
                await self._render(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a TTS failure loses one reply, not the call
                self._call.error("tts_failed", f"{type(exc).__name__}: {exc}")
                self.tts_failures += 1
                if self.on_tts_failure is not None:
                    self.on_tts_failure(self.tts_failures)
            finally:
                self._current = None
                self._jobs.task_done()

    async def _render(self, job: SpeechJob) -> None:
        turn = self.playout.begin_turn(job.label)
        if job.on_first_frame is not None:
            self._first_frame_waiters[turn.turn] = job.on_first_frame
        if job.prefix_audio:
            self.playout.enqueue(turn, job.prefix_audio)
        cached = self._tts.cached(job.text) if job.text else None
        if cached is not None:
            self.playout.enqueue(turn, cached)
        else:
            if job.text:
                job.sentences = self._pieces(split_sentences(normalize_for_speech(job.text)))
            while job.sentences_done < len(job.sentences):
                piece = job.sentences[job.sentences_done]
                audio = self._tts.cached(piece)  # a lead-in or a fixed sentence; says nothing of the voice's health
                if audio is None:
                    # Needed when the audio already queued runs out: renderings for other calls' replies that
                    # are needed sooner (their first words) go first.
                    audio = await self._tts.render_sentence(piece, due_in_s=self.playout.ahead_s())
                    self.tts_failures = 0
                self.playout.enqueue(turn, audio)
                job.sentences_done += 1
        self.playout.finish_turn(turn)

    def _pieces(self, sentences: list[str]) -> list[str]:
        """What to render, in order: a sentence that begins with a template's fixed words is cut after them
        (they come from the prompt cache, `LeadIns`); otherwise the first sentence is cut after its opening
        clause, so the first audio leaves once that is rendered, not the whole sentence."""
        pieces: list[str] = []
        for i, sentence in enumerate(sentences):
            lead_in = self._tts.lead_ins.split(sentence)
            if lead_in is not None:
                pieces += lead_in
            else:
                pieces += split_first_clause(sentence) if i == 0 else [sentence]
        return pieces

    def _audio_sent(self, turn: TurnAudio, frames: int) -> None:
        self._call.metrics.frames_out.inc(frames)
        if turn.frames_sent != frames:  # not the turn's first audio
            return
        at = turn.first_frame_at if turn.first_frame_at is not None else self._clock.now()
        if not self._heard_anything:
            self._heard_anything = True
            self._on_first_audio(at)
        waiter = self._first_frame_waiters.pop(turn.turn, None)
        if waiter is not None:
            waiter(at)
