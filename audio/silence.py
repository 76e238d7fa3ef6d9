"""Caller-silence timer: fires once when the caller has said nothing for ``long_silence_s``."""

from __future__ import annotations


class SilenceTimer:
    def __init__(self, long_silence_s: float, frame_ms: int = 20) -> None:
        if long_silence_s <= 0 or frame_ms <= 0:
            raise ValueError("long_silence_s and frame_ms must be positive")
        self.long_silence_s = long_silence_s
        self.frame_ms = frame_ms
        # Count frames (integers) rather than summing float seconds so the threshold is hit on an exact frame.
        self._threshold_frames = max(1, round(long_silence_s * 1000 / frame_ms))
        self._silent_frames = 0
        self._fired = False

    @property
    def silence_s(self) -> float:
        """Length of the current silence in seconds (0 right after a voiced frame)."""
        return self._silent_frames * self.frame_ms / 1000

    def update(self, voiced: bool) -> bool:
        """Feed one frame. True exactly once per silence, on the frame where it reaches ``long_silence_s``."""
        if voiced:
            self._silent_frames = 0
            self._fired = False
            return False
        self._silent_frames += 1
        if not self._fired and self._silent_frames >= self._threshold_frames:
            self._fired = True
            return True
        return False

    def reset(self) -> None:
        """Start counting from zero again (e.g. after the bot has prompted), re-arming the timer."""
        self._silent_frames = 0
        self._fired = False
