"""Carrier-neutral typed events (carrier -> session) and commands (session -> carrier).

Only `telephony/<carrier>.py` knows a carrier's wire format; everything else in the
server speaks these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str]
    encoding: str
    sample_rate: int
    channels: int
    sequence_number: int


@dataclass(frozen=True, slots=True)
class AudioIn:
    """One inbound chunk of caller audio, still mu-law encoded (normally 160 bytes = 20 ms)."""

    payload: bytes
    track: str
    chunk: int
    timestamp_ms: int
    sequence_number: int


@dataclass(frozen=True, slots=True)
class DtmfIn:
    digit: str
    track: str
    sequence_number: int


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    name: str
    sequence_number: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    reason: str
    sequence_number: int | None = None


InboundEvent = Connected | CallStarted | AudioIn | DtmfIn | MarkPlayed | CallEnded


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Outbound mu-law audio; the session always sends whole multiples of 160 bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Clear:
    pass


OutboundCommand = PlayAudio | Mark | Clear


class ProtocolError(ValueError):
    """A message from the carrier that we cannot accept. `kind` is the metrics label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class StreamParams:
    """What the voice webhook passes to the stream as <Parameter>s."""

    values: dict[str, str] = field(default_factory=dict)
