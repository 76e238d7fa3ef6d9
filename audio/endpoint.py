"""Utterance endpointing: turns a stream of (frame, voiced) pairs into utterances.

Per call, one :class:`Endpointer` is fed every inbound frame with the VAD's verdict. It reports

* :class:`SpeechStarted` once ``speech_start_ms`` of voiced frames have been seen (a single unvoiced frame inside
  that run is tolerated: VADs flicker on stops and fricatives; two in a row end the run);
* :class:`SpeechEnded` once ``silence_ms`` of consecutive unvoiced frames follow, or when the utterance reaches
  ``max_utterance_s`` (reason ``"max_length"``; if the caller keeps talking a new utterance starts);
* :class:`SpeechDiscarded` instead of ``SpeechEnded`` when the utterance held less than ``min_speech_ms`` of voiced
  frames in total (a cough, a click, a line pop).

Frame indices count pushed frames from 0 (since construction or :meth:`Endpointer.reset`), so
``frame_index * frame_ms`` is the time into the call's inbound audio.

The utterance audio is ``pre_roll_ms`` of audio before the first voiced frame (the VAD needs a few frames to
react and soft onsets matter to ASR), the speech itself, and up to ``pre_roll_ms`` of the trailing silence; the
rest of the silence that ended the utterance is dropped. Frames are kept by reference, not copied: do not
modify a frame after pushing it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

SAMPLE_RATE = 8000
# Unvoiced frames tolerated inside a voiced run before the run counts as broken.
_MAX_GAP_FRAMES = 1


@dataclass(frozen=True)
class EndpointerConfig:
    speech_start_ms: int = 60
    silence_ms: int = 500
    min_speech_ms: int = 200
    max_utterance_s: float = 30.0
    pre_roll_ms: int = 200
    frame_ms: int = 20

    def __post_init__(self) -> None:
        if self.frame_ms <= 0:
            raise ValueError("frame_ms must be positive")
        if min(self.speech_start_ms, self.silence_ms) <= 0 or self.max_utterance_s <= 0:
            raise ValueError("speech_start_ms, silence_ms and max_utterance_s must be positive")
        if self.min_speech_ms < 0 or self.pre_roll_ms < 0:
            raise ValueError("min_speech_ms and pre_roll_ms must not be negative")


@dataclass(frozen=True)
class SpeechStarted:
    frame_index: int
    """First voiced frame of the run that started the utterance (the event is emitted a few frames later)."""


@dataclass(frozen=True, eq=False)
class SpeechEnded:
    audio: np.ndarray
    """The utterance, int16 at 8 kHz: pre-roll + speech + up to pre_roll_ms of trailing silence."""
    frame_index: int
    """Last voiced frame of the utterance (for "max_length": the frame where it was cut)."""
    duration_s: float
    """Speech span from the first to the last voiced frame, without pre-roll or trailing silence."""
    voiced_ms: int
    """Total voiced time inside the utterance."""
    reason: str
    """"silence", "max_length" or "turn_end" (a turn-end policy ended it, see `Endpointer.end_now`)."""


@dataclass(frozen=True)
class SpeechDiscarded:
    frame_index: int
    """Last voiced frame of the discarded burst."""
    voiced_ms: int


EndpointEvent: TypeAlias = SpeechStarted | SpeechEnded | SpeechDiscarded


class _Run:
    """Voiced run with gap tolerance: counts voiced frames; broken by more than _MAX_GAP_FRAMES unvoiced ones."""

    __slots__ = ("voiced", "gap", "onset")

    def __init__(self) -> None:
        self.voiced = 0
        self.gap = 0
        self.onset = -1

    def update(self, voiced: bool, index: int) -> None:
        if voiced:
            if self.voiced == 0:
                self.onset = index
            self.voiced += 1
            self.gap = 0
        elif self.voiced:
            self.gap += 1
            if self.gap > _MAX_GAP_FRAMES:
                self.clear()

    def clear(self) -> None:
        self.voiced = 0
        self.gap = 0
        self.onset = -1


class Endpointer:
    def __init__(self, config: EndpointerConfig | None = None) -> None:
        self.config = config or EndpointerConfig()
        c = self.config
        f = c.frame_ms
        self._start_frames = max(1, -(-c.speech_start_ms // f))
        self._silence_frames = max(1, -(-c.silence_ms // f))
        self._pre_roll_frames = c.pre_roll_ms // f
        self._max_frames = max(1, round(c.max_utterance_s * 1000 / f))
        # Enough history for the pre-roll plus the longest possible start run (gaps included).
        self._history_len = self._pre_roll_frames + self._start_frames * (1 + _MAX_GAP_FRAMES) + 1
        self._default_silence_frames = self._silence_frames
        self.reset()

    def set_silence_ms(self, silence_ms: int | None) -> None:
        """Per-turn override of the silence that ends an utterance (None: back to the configured one).

        A caller reading an order number pauses between groups; a yes/no answer needs no such wait.
        """
        if silence_ms is None:
            self._silence_frames = self._default_silence_frames
        elif silence_ms <= 0:
            raise ValueError(f"silence_ms must be positive, got {silence_ms}")
        else:
            self._silence_frames = max(1, -(-silence_ms // self.config.frame_ms))

    def reset(self) -> None:
        """Forget everything (new call, or after the bot took the floor and earlier audio must not leak)."""
        self._index = -1
        self._in_speech = False
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=self._history_len)
        self._start_run = _Run()  # candidate start of an utterance
        self._barge_run = _Run()  # sustained speech, independent of utterance boundaries
        self._frames: list[np.ndarray] = []
        self._first_index = 0  # frame index of self._frames[0]
        self._onset = 0
        self._last_voiced = 0
        self._voiced_frames = 0
        self._unvoiced_streak = 0
        self._silence_override: int | None = None

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def voiced_run_ms(self) -> int:
        """Voiced time in the current sustained run (single-frame gaps tolerated); 0 after a pause."""
        return self._barge_run.voiced * self.config.frame_ms

    @property
    def frames_seen(self) -> int:
        return self._index + 1

    # -- hooks for a turn-end policy (`ivr.turn_end`): it may end an utterance sooner or later than silence_ms --

    @property
    def trailing_silence_ms(self) -> int:
        """Unvoiced time since the last voiced frame of the utterance in progress (0 when not in speech)."""
        return self._unvoiced_streak * self.config.frame_ms if self._in_speech else 0

    @property
    def will_be_utterance(self) -> bool:
        """The utterance in progress has enough voiced time to be one (not a cough to discard) if it ended now."""
        return self._in_speech and self._voiced_frames * self.config.frame_ms >= self.config.min_speech_ms

    def utterance_so_far(self) -> np.ndarray:
        """The utterance in progress as it would end now (pre-roll, speech, trailing silence up to pre-roll)."""
        if not self._in_speech:
            return np.zeros(0, dtype=np.int16)
        keep_until = min(self._last_voiced + self._pre_roll_frames, self._index)
        frames = self._frames[: keep_until - self._first_index + 1]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)

    def wait_for_silence(self, silence_ms: int | None) -> None:
        """A longer silence to end the utterance in progress (None: back to the step's); reset by new speech.

        Never shorter than the step's own silence (`set_silence_ms`): a step that waits 1.5 s between digit groups
        keeps waiting that long whatever a policy asks."""
        if silence_ms is None:
            self._silence_override = None
        else:
            self._silence_override = max(self._silence_frames, 1, -(-silence_ms // self.config.frame_ms))

    def end_now(self) -> EndpointEvent | None:
        """Ends the utterance in progress at once (reason ``"turn_end"``); None when there is none."""
        return self._finish("turn_end") if self._in_speech else None

    def push(self, frame: np.ndarray, voiced: bool) -> list[EndpointEvent]:
        """Feed one frame and its VAD verdict; returns the events it caused (usually none)."""
        if frame.ndim != 1:
            raise ValueError(f"expected a 1-D frame, got shape {frame.shape}")
        self._index += 1
        i = self._index
        self._barge_run.update(voiced, i)
        if not self._in_speech:
            return self._push_idle(frame, voiced, i)
        return self._push_speech(frame, voiced, i)

    def _push_idle(self, frame: np.ndarray, voiced: bool, i: int) -> list[EndpointEvent]:
        self._history.append((i, frame))
        run = self._start_run
        run.update(voiced, i)
        if run.voiced < self._start_frames:
            return []
        first = run.onset - self._pre_roll_frames
        self._frames = [f for j, f in self._history if j >= first]
        self._first_index = i - len(self._frames) + 1
        self._onset = run.onset
        self._last_voiced = i
        self._voiced_frames = run.voiced
        self._unvoiced_streak = 0
        self._in_speech = True
        self._history.clear()
        run.clear()
        return [SpeechStarted(self._onset)]

    def _push_speech(self, frame: np.ndarray, voiced: bool, i: int) -> list[EndpointEvent]:
        self._frames.append(frame)
        if voiced:
            self._voiced_frames += 1
            self._last_voiced = i
            self._unvoiced_streak = 0
            self._silence_override = None
        else:
            self._unvoiced_streak += 1
            silence = self._silence_frames if self._silence_override is None else self._silence_override
            if self._unvoiced_streak >= silence:
                return [self._finish("silence")]
        if i - self._onset + 1 >= self._max_frames:
            return [self._finish("max_length")]
        return []

    def _finish(self, reason: str) -> EndpointEvent:
        c = self.config
        voiced_ms = self._voiced_frames * c.frame_ms
        frames = self._frames
        self._frames = []
        self._in_speech = False
        self._silence_override = None
        if reason == "max_length":
            end = self._index
        else:
            end = self._last_voiced
            # Keep a little of the trailing silence (ASR likes some context), drop the rest.
            keep_until = min(end + self._pre_roll_frames, self._index)
            frames = frames[: keep_until - self._first_index + 1]
        if voiced_ms < c.min_speech_ms:
            return SpeechDiscarded(frame_index=self._last_voiced, voiced_ms=voiced_ms)
        return SpeechEnded(
            audio=np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16),
            frame_index=end,
            duration_s=(end - self._onset + 1) * c.frame_ms / 1000,
            voiced_ms=voiced_ms,
            reason=reason,
        )
