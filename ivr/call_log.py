"""One call's records and errors: events go to storage, errors to the log and metrics, all with the call id."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flows.pci import mask_card_numbers
from ivr.metrics import Metrics
from ivr.storage import AsyncStorage

_log = logging.getLogger("ivr.session")

EventData = Mapping[str, object]


def printable(call_id: str, limit: int = 64) -> str:
    """A caller-supplied id as it may appear in a log line: no line breaks or control characters to forge
    lines with, and a bounded length."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in call_id[:limit])
    return cleaned + ("..." if len(call_id) > limit else "")


class CallLog:
    """Nothing is stored until the stream is accepted (`bind`): a refused stream leaves no call record."""

    def __init__(self, db: AsyncStorage, metrics: Metrics) -> None:
        self.db = db
        self.metrics = metrics
        self.call_id: str | None = None
        self.log: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(_log, {"call_sid": "-"})

    def name(self, call_id: str) -> None:
        """Log lines carry the call id, even for a stream that is then refused."""
        self.log = logging.LoggerAdapter(_log, {"call_sid": printable(call_id)})

    def bind(self, call_id: str) -> None:
        """The stream is accepted: from now on its events are stored under this call."""
        self.call_id = call_id
        self.name(call_id)

    def record(self, kind: str, data: EventData | None = None) -> None:
        if self.call_id is not None:
            self.db.submit(self.db.sync.add_event, self.call_id, kind, dict(data or {}))

    def error(self, kind: str, message: str) -> None:
        message = mask_card_numbers(message)  # an error may quote what the caller or the carrier sent
        self.metrics.errors.labels(kind).inc()
        self.log.warning("%s: %s", kind, message)
        self.record("error", {"kind": kind, "message": message})
