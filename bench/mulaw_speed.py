"""mu-law encode/decode speed of `audio.mulaw` next to stdlib `audioop` (the "codec" part of the results)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.speech import Utterance


def mulaw_speed(pcm: np.ndarray, repeats: int = 5) -> dict[str, Any]:
    """mu-law encode/decode speed of `audio.mulaw` next to stdlib `audioop`, per 20 ms frame and in bulk."""
    from audio import mulaw

    audioop: Any  # stdlib up to 3.12; `audioop-lts` after
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop as stdlib_audioop
        audioop = stdlib_audioop
    except ImportError:
        audioop = None

    pcm = np.ascontiguousarray(pcm, dtype=np.int16)
    pcm_bytes = pcm.tobytes()
    ulaw = mulaw.encode(pcm)
    frames_pcm = [pcm[i : i + 160] for i in range(0, len(pcm) - 159, 160)]
    frames_pcm_bytes = [f.tobytes() for f in frames_pcm]
    frames_ulaw = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]

    def timed(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    cases: dict[str, Callable[[], Any]] = {
        "ours_encode_bulk": lambda: mulaw.encode(pcm),
        "ours_decode_bulk": lambda: mulaw.decode(ulaw),
        "ours_encode_frames": lambda: [mulaw.encode(f) for f in frames_pcm],
        "ours_decode_frames": lambda: [mulaw.decode(f) for f in frames_ulaw],
    }
    if audioop is not None:
        cases |= {
            # Like for like: audioop works on bytes, ours returns a numpy array, so decode includes np.frombuffer.
            "audioop_encode_bulk": lambda: audioop.lin2ulaw(pcm_bytes, 2),
            "audioop_decode_bulk": lambda: np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16),
            "audioop_encode_frames": lambda: [audioop.lin2ulaw(f, 2) for f in frames_pcm_bytes],
            "audioop_decode_frames": lambda: [
                np.frombuffer(audioop.ulaw2lin(f, 2), dtype=np.int16) for f in frames_ulaw
            ],
        }
    seconds = {name: timed(fn) for name, fn in cases.items()}
    samples = len(pcm)
    out: dict[str, Any] = {
        "audio_s": round(samples / 8000, 1),
        "repeats": repeats,
        "audioop": "missing" if audioop is None else getattr(audioop, "__file__", "builtin"),
        "bit_exact_with_audioop": None
        if audioop is None
        else (audioop.lin2ulaw(pcm_bytes, 2) == ulaw and audioop.ulaw2lin(ulaw, 2) == mulaw.decode(ulaw).tobytes()),
    }
    for name, s in seconds.items():
        if name.endswith("bulk"):
            # MB/s of mu-law bytes (one per sample) processed.
            out[name.replace("_bulk", "_bulk_MB_s")] = round(samples / s / 1e6, 1)
        else:
            out[name.replace("_frames", "_frames_per_s")] = round(len(frames_pcm) / s)
    if audioop is not None:
        out["ratio_ours_over_audioop"] = {
            kind: round(seconds[f"audioop_{kind}"] / seconds[f"ours_{kind}"], 2)
            for kind in ("encode_bulk", "decode_bulk", "encode_frames", "decode_frames")
        }
    return out


def phone_speech_pcm(utterances: list[Utterance], seconds: float = 60.0) -> np.ndarray:
    """`seconds` of the callers' speech as 8 kHz 16-bit PCM (repeated as needed)."""
    from audio import mulaw

    speech = np.concatenate([mulaw.decode(u.audio) for u in utterances])
    reps = int(np.ceil(seconds * 8000 / max(1, len(speech))))
    return np.tile(speech, reps)[: int(seconds * 8000)]
