"""Carrier-neutral typed events (carrier -> session) and commands (session -> carrier).

Only `telephony/<carrier>.py` knows a carrier's wire format; everything else in the
server speaks these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A media stream for one call has started; its credentials were already checked by the serializer.

    `call_id` is the carrier's id of the call (the same across streams: a call transferred back to us keeps
    it); `stream_id` names this one media stream. `params` are what the voice webhook passed along, with
    no credentials left in them. Audio is always 8 kHz mu-law mono by the time a `CallStarted` exists.
    """

    call_id: str
    stream_id: str
    caller: str | None
    params: dict[str, str]
    sequence_number: int
    carrier: str


Track = Literal["caller", "bot"]


@dataclass(frozen=True, slots=True)
class AudioIn:
    """One inbound chunk of audio, still mu-law encoded (normally 160 bytes = 20 ms).

    `track` is "caller" for what the caller says; some carriers can also echo what we play ("bot")."""

    payload: bytes
    track: Track
    sequence_number: int


@dataclass(frozen=True, slots=True)
class DtmfIn:
    digit: str
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
    """A message from the carrier that we cannot accept. `kind` is the metrics label; a `fatal` error
    (a stream we cannot decode, a stream without valid credentials) ends the stream."""

    def __init__(self, kind: str, message: str, *, fatal: bool = False, call_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.fatal = fatal
        self.call_id = call_id  # known when the message named its call
