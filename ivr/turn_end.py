"""Semantic end of turn: end a caller's turn sooner when their words are complete, later when they are not.

A fixed endpointing silence (`AudioConfig.endpoint_silence_ms`, 400 ms) is a compromise: long enough not to cut
a caller who pauses at a comma, so every caller who has finished waits for it, and then for speech recognition.
Here, once a pause reaches `speculate_after_ms`, what the caller said so far is transcribed at once (while the
pause goes on). The words decide:

* final (a question, "Where is my parcel?", a one-phrase answer, "Yes.", or the whole answer the step asks for:
  an id said to its last possible digit, "yeah that's right" at a yes/no question; `ivr/slot_listening.py`): the
  turn ends as soon as the pause reaches `final_end_ms`, even at a step that otherwise waits 1.5 s between digit
  groups, and the transcript is already there: no recognition left to wait for;
* complete (a full stop): the turn ends at `complete_end_ms`, no sooner than the fixed silence by default
  (Whisper also puts a full stop after a clause cut at a comma pause), but the transcript is ready when it ends;
* unfinished (a trailing "and", "the", "to", "um", or a comma): the turn waits for `incomplete_end_ms`;
* a number being read ("1 2 3 4"): the turn waits for `number_end_ms`, since digits come in groups;
* anything else, or no transcript yet: the fixed endpointing silence applies, and the speculative transcript is
  still used if the caller said nothing more.

New speech drops the speculation (its transcript no longer covers the utterance) and the next pause starts
another. Speculation runs only when a recognition worker is idle, so under load the extra work is skipped and
the fixed silence applies; it never runs in a card slot (nothing said there is transcribed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from audio.caller import CallerAudio
from audio.resample import resample
from models.asr import AsrService, Transcript

Verdict = Literal["final", "complete", "incomplete", "number", "unsure"]

# A turn that ends in one of these words is not finished: the caller is thinking of the next word.
_UNFINISHED = frozenset(
    "and or but so because if when while then than the a an to of for with from in on at by my your our their "
    "his her its this that these those is are was were be have has had will would can could should um uh er "
    "erm like plus".split()
)
_NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand double "
    "triple".split()
)
# A whole turn that is one of these is an answer, not the start of a sentence.
_ANSWERS = frozenset(
    "yes|yeah|yep|yup|no|nope|correct|right|that's right|exactly|sure|okay|ok|thanks|thank you|no thanks|"
    "no thank you|yes please|that's it|that's all|goodbye|bye".split("|")
)
_WORD = re.compile(r"[A-Za-z0-9']+")


def _whole_number(word: str) -> bool:
    return word.isdigit() and len(word) >= 3


class TurnEndConfig(BaseModel):
    """`Settings.turn_end` (``IVR_TURN_END__...``)."""

    semantic: bool = Field(True, description="end turns by their words as well as by silence (see ivr/turn_end.py)")
    speculate_after_ms: int = Field(120, ge=20, description="pause after which what was said so far is transcribed")
    final_end_ms: int = Field(200, ge=20, description="pause that ends a question or a one-phrase answer")
    complete_end_ms: int = Field(
        400, ge=20, description="pause that ends a turn ending in a full stop (bench/turn_end_check.py: none split)"
    )
    incomplete_end_ms: int = Field(900, ge=100, description="pause that ends a turn ending in 'and', 'the', ...")
    number_end_ms: int = Field(
        600,
        ge=100,
        description="pause that ends a turn ending in a number being read (steps that expect digits wait longer: "
        "ivr/slot_listening.py)",
    )


def judge(text: str) -> Verdict:
    """How finished `text` (a transcript of the turn so far) sounds.

    "final": a question or a one-phrase answer ("Where is my parcel?", "Yes."): the turn ends now.
    "complete": a full stop. Not enough to end sooner: Whisper puts one after a clause cut at a comma pause
    just as after a finished sentence (bench/turn_end_check.py measured 6 of 23 read sentences split when a full
    stop ended the turn at 300 ms), so the turn still waits for the usual silence, with its transcript ready.
    "incomplete" / "number": the caller is mid-phrase or reading digits: wait longer.
    """
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words:
        return "unsure"
    trailing_numbers = 0
    for word in reversed(words):
        if not (word.isdigit() or word in _NUMBER_WORDS):
            break
        trailing_numbers += 1
    # Digits read in groups ("4 7", "four seven") or a number left open ("my order is 1 2", "in 18"); not "In
    # 1813.", where Whisper's full stop says the caller has finished, nor a lone number of three or more digits
    # ("In 1813"): Whisper leaves the full stop off now and then, and a year or an amount read whole is finished
    # (a step that expects digits waits for the next group anyway: `ivr/slot_listening.py`).
    if trailing_numbers >= 2 or (
        trailing_numbers == 1 and not stripped.endswith((".", "?", "!")) and not _whole_number(words[-1])
    ):
        return "number"
    last = words[-1]
    if last in _UNFINISHED or stripped.endswith((",", ";", ":", "-", "...")):
        return "incomplete"
    if stripped.endswith(("?", "!")) or " ".join(words) in _ANSWERS:
        return "final"
    if stripped.endswith("."):
        return "complete"
    return "unsure"


@dataclass
class _Speculation:
    task: asyncio.Task[Transcript]
    verdict: Verdict | None = None


class TurnEnd:
    """One call's turn-end policy, driven frame by frame by `ivr.listening.Listening`."""

    def __init__(
        self,
        config: TurnEndConfig,
        *,
        transcribe: Callable[[np.ndarray, str | None], Awaitable[Transcript]],
        can_speculate: Callable[[], bool],
    ) -> None:
        self.config = config
        self._transcribe = transcribe
        self._can_speculate = can_speculate
        self._spec: _Speculation | None = None
        self.on_complete: Callable[[], None] | None = None  # ends the turn now (set by Listening)
        # Whether words answer the current step in full (set by Listening for each step; None: no step knows).
        self.answers_step: Callable[[str], bool] | None = None
        self.speculations = 0
        self.ended_early = 0

    def after_frame(
        self, audio: CallerAudio, voiced: bool, *, may_transcribe: bool = True, vocabulary: str | None = None
    ) -> None:
        """Called after each caller frame has gone through the endpointer (`may_transcribe`: not a card slot;
        `vocabulary`: the step's words, given to the recogniser as the final transcription gives them)."""
        endpointer = audio.endpointer
        if voiced or not endpointer.in_speech:
            if voiced:
                self._drop()  # the caller went on: what was transcribed is no longer the whole utterance
            return
        silence = endpointer.trailing_silence_ms
        if (
            self._spec is None
            and may_transcribe
            and silence >= self.config.speculate_after_ms
            and endpointer.will_be_utterance  # a cough or a click is discarded, never transcribed
            and self._can_speculate()
        ):
            self.speculations += 1
            spec = _Speculation(asyncio.ensure_future(self._transcribe(endpointer.utterance_so_far(), vocabulary)))
            self._spec = spec
            spec.task.add_done_callback(lambda _t: self._judged(audio, spec))
        elif self._spec is not None and silence >= self._end_after_ms(self._spec.verdict):
            self._end()

    def take_transcript(self) -> asyncio.Task[Transcript] | None:
        """At the end of an utterance: the speculative transcription of exactly that utterance, if one ran."""
        spec, self._spec = self._spec, None
        return spec.task if spec is not None else None

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._spec is not None:
            self._spec.task.cancel()
            self._spec = None

    def _judged(self, audio: CallerAudio, spec: _Speculation) -> None:
        # A failure is the utterance's failure: whoever takes the transcript gets the exception and handles it.
        failed = spec.task.cancelled() or spec.task.exception() is not None
        if spec is not self._spec or failed:
            return
        transcript = spec.task.result()
        spec.verdict = judge(transcript.text)
        # A trailing "and" or comma still means more is coming; otherwise an answer the step takes whole is final
        # (digits read in full are "number" to the words alone).
        if spec.verdict != "incomplete" and self.answers_step is not None and self.answers_step(transcript.text):
            spec.verdict = "final"
        c = self.config
        endpointer = audio.endpointer
        if spec.verdict in ("final", "complete"):
            if endpointer.trailing_silence_ms >= self._end_after_ms(spec.verdict):
                self._end()
        elif spec.verdict == "incomplete":
            endpointer.wait_for_silence(c.incomplete_end_ms)
        elif spec.verdict == "number":
            endpointer.wait_for_silence(c.number_end_ms)

    def _end_after_ms(self, verdict: Verdict | None) -> float:
        """The pause after which words judged `verdict` end the turn here (inf: the endpointer decides)."""
        if verdict == "final":
            return self.config.final_end_ms
        if verdict == "complete":
            return self.config.complete_end_ms
        return float("inf")

    def _end(self) -> None:
        if self.on_complete is not None:
            self.ended_early += 1
            self.on_complete()


def turn_end_for(config: TurnEndConfig, asr: AsrService, call_id: Callable[[], str | None]) -> TurnEnd | None:
    """The policy for one call, transcribing on the shared ASR service (None: semantic turn ends are off)."""
    if not config.semantic:
        return None

    async def transcribe(audio8k: np.ndarray, vocabulary: str | None) -> Transcript:
        audio16 = resample(audio8k.astype(np.float32) / 32768.0, 8000, 16000)
        return await asr.transcribe(audio16, call_id() or "-", vocabulary=vocabulary)

    return TurnEnd(config, transcribe=transcribe, can_speculate=lambda: asr.has_idle_worker)
