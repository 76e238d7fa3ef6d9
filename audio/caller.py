"""The inbound audio chain for one call: mu-law -> PCM -> VAD -> endpointer, loudness, silence.

Pure and synchronous: one `process()` per 20 ms frame, microseconds of work, no I/O. The call
session owns one `CallerAudio` and acts on what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audio import mulaw
from audio.endpoint import Endpointer, EndpointerConfig, EndpointEvent, SpeechEnded, SpeechStarted
from audio.loudness import LoudnessMeter
from audio.silence import SilenceTimer
from audio.vad import Vad

FRAME_SAMPLES = 160


@dataclass(frozen=True, slots=True)
class CallerAudioConfig:
    vad_aggressiveness: int = 2
    endpoint: EndpointerConfig = field(default_factory=EndpointerConfig)
    loudness_calibration_db: float = 87.0
    long_silence_s: float = 8.0


@dataclass(slots=True)
class FrameResult:
    voiced: bool
    events: list[EndpointEvent]
    spl_db: float
    long_silence: bool


class CallerAudio:
    def __init__(self, config: CallerAudioConfig) -> None:
        self.config = config
        self.vad = Vad(config.vad_aggressiveness, 8000)
        self.endpointer = Endpointer(config.endpoint)
        self.loudness = LoudnessMeter(config.loudness_calibration_db)
        self.silence = SilenceTimer(config.long_silence_s)
        self._partial = b""
        self.utterance_peak_spl: float | None = None

    def frames(self, payload: bytes) -> list[np.ndarray]:
        """Splits a payload into 20 ms frames; Twilio sends 160 bytes, but frame size is not contractual."""
        data = self._partial + payload if self._partial else payload
        whole = len(data) - len(data) % FRAME_SAMPLES
        self._partial = data[whole:]
        if not whole:
            return []
        pcm = mulaw.decode(data[:whole])
        return [pcm[i : i + FRAME_SAMPLES] for i in range(0, whole, FRAME_SAMPLES)]

    def process(self, frame: np.ndarray) -> FrameResult:
        voiced = self.vad.is_speech(frame)
        spl = self.loudness.update(frame, voiced)
        events = self.endpointer.push(frame, voiced)
        for event in events:
            if isinstance(event, SpeechStarted):
                self.loudness.reset_utterance()
            elif isinstance(event, SpeechEnded):
                self.utterance_peak_spl = self.loudness.peak_spl_db
        long_silence = self.silence.update(voiced)
        return FrameResult(voiced, events, spl, long_silence)

    def quiet(self) -> None:
        """While the bot talks, the caller's silence is not a long silence."""
        self.silence.reset()
