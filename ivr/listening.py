"""Listening: caller audio and keys in; `Utterance | Digits | LongSilence | BargeIn` out.

Frame by frame (microseconds each, never waiting): decode, VAD, endpointing, loudness and the silence
timer run in `audio.caller.CallerAudio`; this stage decides what they mean for the conversation. Speech
that keeps going while the bot plays is a barge-in; a key while the bot plays is one too. During a card
slot (`Listen.pci`) speech is neither transcribed nor kept. Keys are recorded once per run (see `ivr.keypad`),
masked: a key typed in a card slot, and any card number typed anywhere else, is a "*".

Every turn's end is counted by what ended it (`ivr_turn_ends_total{by}`), and a caller who starts speaking again
within `resume_window_s` of it was cut off mid-thought (`ivr_turns_resumed_total{by}`, a `turn_resumed` event):
in production, the split count the bench measures offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np

from audio.caller import CallerAudio, CallerAudioConfig
from audio.endpoint import SpeechDiscarded, SpeechEnded, SpeechStarted
from flows.actions import Listen
from ivr.call_log import CallLog
from ivr.clock import Clock
from ivr.keypad import DigitCollector, Digits
from ivr.slot_listening import answer_is_whole, silence_ms_for
from ivr.turn_end import TurnEnd
from models.asr import Transcript


@dataclass(frozen=True, slots=True)
class Utterance:
    audio: np.ndarray  # 8 kHz int16 PCM
    last_voiced_at: float
    endpointed_at: float
    duration_s: float
    spl_db: float | None
    during_playback: bool
    # The turn-end policy's transcription of exactly this audio, started during the trailing pause (None: none).
    early_transcript: asyncio.Task[Transcript] | None = None


@dataclass(frozen=True, slots=True)
class LongSilence:
    pass


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller took the turn while the bot was speaking. After a key the cut reply is never resumed;
    after speech it is, if the caller only said "uh-huh"."""

    kind: Literal["speech", "dtmf"]

    @property
    def resumable(self) -> bool:
        return self.kind == "speech"


Heard = Utterance | Digits | LongSilence | BargeIn


@dataclass(frozen=True, slots=True)
class ListeningOptions:
    caller_audio: CallerAudioConfig = field(default_factory=CallerAudioConfig)
    barge_in_ms: int = 200  # sustained caller speech that interrupts playback
    inter_digit_s: float = 5.0  # a pause that ends a digit string
    # Speech this soon after a turn ended goes on with it: a caller with a new thought first hears the reply begin.
    resume_window_s: float = 1.0


class Listening:
    def __init__(
        self,
        options: ListeningOptions,
        clock: Clock,
        call: CallLog,
        *,
        bot_speaking: Callable[[], bool],
        emit: Callable[[Heard], None],
        turn_end: TurnEnd | None = None,
    ) -> None:
        self.options = options
        self.audio = CallerAudio(options.caller_audio)
        self._clock = clock
        self._call = call
        self._bot_speaking = bot_speaking
        self._emit = emit
        self.keypad = DigitCollector(clock, emit, inter_digit_s=options.inter_digit_s, on_run=self._keys_typed)
        self._listen = Listen(mode="both")
        self._last_voiced_at = 0.0
        self._barged_in = False
        self._turn_ended: tuple[float, str] | None = None  # when the last turn ended, and what ended it
        self.turn_end = turn_end
        if turn_end is not None:
            turn_end.on_complete = self._end_turn_now

    def expect(self, listen: Listen) -> None:
        self._listen = listen
        self.keypad.expect(listen)
        self.audio.endpointer.set_silence_ms(silence_ms_for(listen))
        if self.turn_end is not None:
            self.turn_end.answers_step = partial(answer_is_whole, listen)

    @property
    def listen(self) -> Listen:
        """What the current step waits for."""
        return self._listen

    def hear_audio(self, payload: bytes) -> None:
        for frame in self.audio.frames(payload):
            result = self.audio.process(frame)
            now = self._clock.now()
            if result.voiced:
                self._last_voiced_at = now
            for ev in result.events:
                if isinstance(ev, SpeechStarted):
                    self._barged_in = False
                    self._speech_started(now)
                elif isinstance(ev, SpeechEnded):
                    self._utterance_ended(ev, now)
                elif isinstance(ev, SpeechDiscarded):
                    self._call.record("noise_discarded", {"voiced_ms": ev.voiced_ms})
            if self.turn_end is not None:
                self.turn_end.after_frame(
                    self.audio, result.voiced, may_transcribe=not self._listen.pci, vocabulary=self._listen.vocabulary
                )
            speaking = self._bot_speaking()
            if speaking and not self._barged_in and self._caller_kept_talking():
                self._barged_in = True
                self._emit(BargeIn("speech"))
            if speaking:
                self.audio.quiet()  # silence while the bot talks is the caller listening, not gone
            elif result.long_silence:
                self._emit(LongSilence())

    def hear_key(self, digit: str) -> None:
        if self._bot_speaking():
            self._emit(BargeIn("dtmf"))
        self.keypad.press(digit)

    def _keys_typed(self, masked: str) -> None:
        self._call.record("dtmf", {"keys": masked})

    def playback_finished(self) -> None:
        self.restart_silence_timer()

    def restart_silence_timer(self) -> None:
        """A long silence is counted from now: after our prompt, or after one we chose not to answer."""
        self.audio.quiet()

    def close(self) -> None:
        self.keypad.close()
        if self.turn_end is not None:
            self.turn_end.close()

    def _end_turn_now(self) -> None:
        """The turn-end policy heard a finished turn: the utterance ends without waiting out the silence."""
        ev = self.audio.end_utterance()
        if isinstance(ev, SpeechEnded):
            self._utterance_ended(ev, self._clock.now())
        elif isinstance(ev, SpeechDiscarded):
            self._call.record("noise_discarded", {"voiced_ms": ev.voiced_ms})

    def _speech_started(self, now: float) -> None:
        if self._turn_ended is None:
            return
        (ended_at, by), self._turn_ended = self._turn_ended, None
        if now - ended_at <= self.options.resume_window_s:
            self._call.metrics.turns_resumed.labels(by).inc()
            self._call.record("turn_resumed", {"by": by, "after_ms": round((now - ended_at) * 1000)})

    def _caller_kept_talking(self) -> bool:
        endpointer = self.audio.endpointer
        return endpointer.in_speech and endpointer.voiced_run_ms >= self.options.barge_in_ms

    def _utterance_ended(self, ev: SpeechEnded, now: float) -> None:
        by = "words" if ev.reason == "turn_end" else ev.reason
        self._call.metrics.turn_ends.labels(by).inc()
        self._turn_ended = (now, by)
        self._call.record(
            "utterance",
            {
                "duration_s": round(ev.duration_s, 3),
                "voiced_ms": ev.voiced_ms,
                "end_frame": ev.frame_index,
                "reason": ev.reason,
                "during_playback": self._barged_in,
            },
        )
        early = self.turn_end.take_transcript() if self.turn_end is not None else None
        if self._listen.pci:
            # Card digits are keypad-only: what the caller says now is neither transcribed nor kept.
            if early is not None:
                early.cancel()
            self._call.record("speech_ignored_pci", {"duration_s": round(ev.duration_s, 2)})
            return
        self._emit(
            Utterance(
                audio=ev.audio,
                last_voiced_at=self._last_voiced_at,
                endpointed_at=now,
                duration_s=ev.duration_s,
                spl_db=self.audio.utterance_peak_spl,
                during_playback=self._barged_in,
                early_transcript=early,
            )
        )
