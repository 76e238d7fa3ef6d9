"""The inbound audio chain for one call: mu-law -> PCM -> VAD -> endpointer, loudness, silence.

Pure and synchronous: one `process()` per 20 ms frame, microseconds of work, no I/O. The call
session owns one `CallerAudio` and acts on what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field, model_validator

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


class AudioConfig(BaseModel):
    """`Settings.audio` (``IVR_AUDIO__...``): the caller audio chain, barge-in and outbound pacing."""

    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode; 3 rejects most noise")
    endpoint_silence_ms: int = Field(
        400,
        ge=100,
        description="trailing silence that ends an utterance; 400 ms splits no test recording (`make bench`)",
    )
    min_speech_ms: int = Field(200, ge=20, description="shorter voiced bursts (clicks, coughs) are not utterances")
    speech_start_ms: int = Field(60, ge=20, description="voiced time needed before speech counts as started")
    max_utterance_s: float = Field(30.0, gt=0, description="an utterance is cut and transcribed at this length")
    long_silence_s: float = Field(8.0, gt=0, description="caller silence that triggers a keep-alive prompt")
    loudness_calibration_db: float = Field(
        87.0, description="estimated SPL = dBFS + this; maps nominal phone speech to ~62 dB SPL (audio/loudness.py)"
    )
    shouting_spl_db: float = Field(78.0, description="estimated SPL above which a caller counts as shouting")
    barge_in_ms: int = Field(200, ge=20, description="sustained caller speech that interrupts bot playback")
    inter_digit_s: float = Field(5.0, gt=0, description="a pause between keys that ends a digit string")
    outbound_lead_ms: int = Field(
        400,
        ge=20,
        description="how far ahead of real time outbound audio is sent: a late event loop is not heard unless "
        "later than this (a barge-in's `clear` empties the carrier's buffer at once, whatever its size)",
    )
    outbound_chunk_ms: int = Field(
        100, ge=20, multiple_of=20, description="outbound audio per media message, at most the lead"
    )

    @model_validator(mode="after")
    def _chunk_within_lead(self) -> AudioConfig:
        if self.outbound_chunk_ms > self.outbound_lead_ms:
            raise ValueError(
                f"outbound_chunk_ms ({self.outbound_chunk_ms}) must not exceed outbound_lead_ms "
                f"({self.outbound_lead_ms})"
            )
        return self

    def caller_audio(self) -> CallerAudioConfig:
        """The part of this configuration that `CallerAudio` runs on."""
        return CallerAudioConfig(
            vad_aggressiveness=self.vad_aggressiveness,
            endpoint=EndpointerConfig(
                speech_start_ms=self.speech_start_ms,
                silence_ms=self.endpoint_silence_ms,
                min_speech_ms=self.min_speech_ms,
                max_utterance_s=self.max_utterance_s,
            ),
            loudness_calibration_db=self.loudness_calibration_db,
            long_silence_s=self.long_silence_s,
        )


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

    def end_utterance(self) -> EndpointEvent | None:
        """Ends the utterance in progress now (a turn-end policy decided the caller has finished)."""
        event = self.endpointer.end_now()
        if isinstance(event, SpeechEnded):
            self.utterance_peak_spl = self.loudness.peak_spl_db
        return event

    def quiet(self) -> None:
        """While the bot talks, the caller's silence is not a long silence."""
        self.silence.reset()
