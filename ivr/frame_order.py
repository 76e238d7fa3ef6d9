"""The order of a stream's frames: stale frames dropped, gaps counted, one wild number never muting a call."""

from __future__ import annotations

from ivr.call_log import CallLog

# Carriers number every frame; frames are not lost on a WebSocket, so a real gap is small.
SEQUENCE_WINDOW = 500  # 10 s of media
SEQUENCE_RESYNC = 3


class FrameOrder:
    """Frames within `SEQUENCE_WINDOW` ahead of the last are used (a gap is counted); a stale one is dropped.
    A wild number is dropped without moving the count, so it cannot mute the call; a run of `SEQUENCE_RESYNC`
    consecutive numbers elsewhere (a carrier that renumbered) becomes the new sequence."""

    def __init__(self, call: CallLog) -> None:
        self._call = call
        self._last = 0
        self._resync: tuple[int, int] | None = None  # (last number, how many in a row) of a run outside the window

    def start_at(self, seq: int) -> None:
        self._last, self._resync = seq, None

    def used(self, seq: int) -> None:
        """A frame that is not delivered (a duplicate start) still takes its number, if it is in order."""
        if self._last < seq <= self._last + SEQUENCE_WINDOW:
            self._last = seq

    def accept(self, seq: int) -> bool:
        last = self._last
        if last < seq <= last + SEQUENCE_WINDOW:
            if seq > last + 1 and last:
                self._call.error("sequence_gap", f"sequenceNumber jumped from {last} to {seq}")
            self._last, self._resync = seq, None
            return True
        run = self._resync
        count = run[1] + 1 if run is not None and seq == run[0] + 1 else 1
        self._resync = (seq, count)
        if count >= SEQUENCE_RESYNC:
            self._call.log.warning("sequenceNumber resynchronised from %d to %d", last, seq)
            self._call.record("sequence_resync", {"from": last, "to": seq})
            self._last, self._resync = seq, None
            return True
        if count == 1:
            if seq <= last:
                self._call.error("out_of_order", f"sequenceNumber {seq} after {last}: dropped")
            else:
                self._call.error("sequence_jump", f"sequenceNumber {seq} far ahead of {last}: dropped")
        return False
