"""Caller loudness: frame level in dBFS and a rough, calibrated estimate of speaking level in dB SPL.

What a dBFS value means on a phone line
---------------------------------------
Levels here are RMS with the AES17 convention: a sine whose peaks touch int16 full scale (32767) reads 0 dBFS, a
full-scale square wave reads +3 dBFS, digital silence is floored at -100 dBFS. G.711 mu-law tops out at
+-32124 after decoding (8159 in its native 14-bit scale), so a phone line's loudest undistorted sine is about
-0.2 dBFS. The G.711 digital milliwatt (0 dBm0, the network's reference level) is a sine 3.17 dB below the
codec's maximum, i.e. about -3.3 dBFS. Speech on a well-aligned network sits around -20 dBm0 active level
(ITU-T P.56 "active speech level": only the time speech is present counts; test speech is normalised to
-26 dBov), which is roughly -22 to -29 dBFS here. Handsets, AGC and carriers shift that by several dB, which is
why this is an *estimate*, good for "normal / raised / shouting", not a sound level meter.

Calibration
-----------
``estimated_spl = dbfs + calibration_db``, applied to the level of voiced frames only (silence between words
would otherwise pull the reading down). :data:`DEFAULT_CALIBRATION_DB` = 87 maps

* nominal telephone speech (-23 to -27 dBFS active level) to 60-64 dB SPL, the textbook level of normal
  conversational speech at 1 m;
* -9 dBFS and above, about 15 dB over nominal, to >= 78 dB SPL. Shouting is 15-25 dB above normal speech, and a
  shouting caller drives the line to within a few dB of mu-law's clipping point.

Measured with :class:`LoudnessMeter` (1 s window, webrtcvad mode 2) on the 26 real recordings in
``shared/speech`` routed through 8 kHz mu-law: the per-recording peak of the smoothed level reads 66-79 dB SPL
(median 71; these are studio/broadcast recordings, hotter than typical phone speech; only the JFK inaugural
address, an oration, reaches 78). The same recordings 14 dB louder, clipped by the codec as a phone line would,
read 79-88 dB SPL (median 83): all above the 78 dB SPL shouting threshold.
"""

from __future__ import annotations

import math

import numpy as np

DBFS_FLOOR = -100.0
DEFAULT_CALIBRATION_DB = 87.0
# Mean square of a full-scale int16 sine (AES17 0 dBFS reference).
_FULL_SCALE_SINE_MS = 32768.0**2 / 2
_FLOOR_MS = _FULL_SCALE_SINE_MS * 10 ** (DBFS_FLOOR / 10)


def _ms_to_dbfs(mean_square: float) -> float:
    if mean_square <= _FLOOR_MS:
        return DBFS_FLOOR
    return 10.0 * math.log10(mean_square / _FULL_SCALE_SINE_MS)


def dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (full-scale sine = 0 dBFS), floored at -100 for digital silence."""
    if frame.size == 0:
        return DBFS_FLOOR
    f = frame.astype(np.float64)
    return _ms_to_dbfs(float(np.dot(f, f)) / f.size)


def estimated_spl(dbfs_value: float, calibration_db: float = DEFAULT_CALIBRATION_DB) -> float:
    """Rough speaking level in dB SPL for a telephone-speech level in dBFS (see module docstring)."""
    return dbfs_value + calibration_db


class LoudnessMeter:
    """Per-call smoothed speech level over voiced frames.

    The level is the power average over the last ``window_ms`` of *voiced* frames (unvoiced frames are ignored,
    not counted as zeros). ``peak_spl_db`` is the highest full-window level since :meth:`reset_utterance`; for an
    utterance shorter than the window it is the average over the whole utterance, so a single loud syllable
    does not read as shouting.
    """

    def __init__(
        self, calibration_db: float = DEFAULT_CALIBRATION_DB, window_ms: int = 1000, frame_ms: int = 20
    ) -> None:
        if window_ms < frame_ms or frame_ms <= 0:
            raise ValueError("window_ms must be at least one frame and frame_ms positive")
        self.calibration_db = calibration_db
        self._n = window_ms // frame_ms
        self._powers = np.zeros(self._n, dtype=np.float64)
        self._scratch = np.zeros(0, dtype=np.float32)
        self._spl = estimated_spl(DBFS_FLOOR, calibration_db)
        self.reset_utterance()

    def reset_utterance(self) -> None:
        """Start a new utterance: clear the window and the peak. ``spl_db`` keeps its last value until speech."""
        self._powers[:] = 0.0
        self._pos = 0
        self._count = 0
        self._sum = 0.0
        self._full_peak: float | None = None

    @property
    def spl_db(self) -> float:
        """Current smoothed level in estimated dB SPL."""
        return self._spl

    @property
    def peak_spl_db(self) -> float:
        """Loudest smoothed level of the current utterance in estimated dB SPL."""
        if self._full_peak is not None:
            return self._full_peak
        if self._count:
            return self._spl
        return estimated_spl(DBFS_FLOOR, self.calibration_db)

    def update(self, frame: np.ndarray, voiced: bool) -> float:
        """Feed one int16 frame and its VAD verdict; returns the current ``spl_db``."""
        if not voiced:
            return self._spl
        if self._scratch.size != frame.size:
            self._scratch = np.empty(frame.size, dtype=np.float32)
        np.copyto(self._scratch, frame, casting="unsafe")
        power = float(np.dot(self._scratch, self._scratch)) / max(frame.size, 1)
        self._sum += power - self._powers[self._pos]
        self._powers[self._pos] = power
        self._pos += 1
        if self._pos == self._n:
            self._pos = 0
            self._sum = float(self._powers.sum())  # re-anchor the running sum (no float drift on long calls)
        if self._count < self._n:
            self._count += 1
        self._spl = estimated_spl(_ms_to_dbfs(max(self._sum, 0.0) / self._count), self.calibration_db)
        if self._count == self._n and (self._full_peak is None or self._spl > self._full_peak):
            self._full_peak = self._spl
        return self._spl
