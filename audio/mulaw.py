"""G.711 mu-law codec (the audio format of Twilio Media Streams), table driven.

Bit-exact with the reference G.711 code that CPython's ``audioop`` uses (``ulaw2lin(b, 2)`` /
``lin2ulaw(b, 2)``): encoding drops the two low bits of the int16 sample (mu-law carries 14 bits), clips the
magnitude at 8159, and inverts all bits of the code. Both directions are single numpy gathers through tables
built once at import (256 entries to decode, 65536 to encode), so a 20 ms frame costs a few microseconds.
"""

from __future__ import annotations

import numpy as np

SILENCE_BYTE = 0xFF
"""mu-law code of digital silence (linear 0); used to pad outbound audio to whole frames."""
FRAME_BYTES = 160
"""One 20 ms frame of 8 kHz mu-law: one byte per sample."""

_BIAS = 0x84
_CLIP = 8159  # largest 14-bit magnitude mu-law can represent (before the bias is added)
# Upper bounds of the 8 segments of the biased 14-bit magnitude.
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _build_encode_table() -> np.ndarray:
    # Index is the uint16 view of an int16 sample, so index i holds the code for int16(i).
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left")  # first segment whose end >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    # The clipped magnitude plus bias can reach 0x2000, past the last segment: G.711 returns the top code.
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()
_DECODE.flags.writeable = False
_ENCODE.flags.writeable = False


def decode(payload: bytes) -> np.ndarray:
    """mu-law bytes -> int16 PCM (a new array, one sample per byte)."""
    return _DECODE[np.frombuffer(payload, dtype=np.uint8)]


def encode(pcm: np.ndarray) -> bytes:
    """int16 PCM -> mu-law bytes. Raises TypeError for any other dtype (scale floats first)."""
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"mu-law encode needs int16 PCM, got {pcm.dtype}")
    return _ENCODE[pcm.view(np.uint16)].tobytes()
