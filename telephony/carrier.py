"""The carrier seam: what a carrier's wire format must offer the call session.

A serializer belongs to one media stream: it learns the stream's id from the start message and
checks the stream's credentials, so nothing above `telephony/` knows a carrier's JSON, track names
or tokens. A second carrier is one module implementing `CarrierSerializer` plus a route in the app.
"""

from __future__ import annotations

from typing import Protocol

from telephony.events import InboundEvent, OutboundCommand


class CarrierSerializer(Protocol):
    carrier: str

    def deserialize(self, raw: str | bytes) -> InboundEvent:
        """One wire message -> one typed event; raises `ProtocolError` for what cannot be accepted."""
        ...

    def serialize(self, cmd: OutboundCommand) -> str | bytes:
        """One typed command -> one wire message; only valid once the stream has started."""
        ...
