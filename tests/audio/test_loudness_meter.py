"""Loudness on real recordings through 8 kHz mu-law, and the same recordings 14 dB louder (a shouting caller)."""

import numpy as np
import pytest

from audio import mulaw
from audio.files import read_audio, to_phone
from audio.loudness import DEFAULT_CALIBRATION_DB, LoudnessMeter, dbfs, estimated_spl
from tests.helpers.speech import frames_of, manifest, phone_pcm, vad_flags

SHOUTING_SPL = 78.0  # AudioConfig.shouting_spl_db
LOUDER_DB = 14.0


def test_full_scale_sine_reads_0_dbfs_and_silence_reads_the_floor():
    t = np.arange(160) / 8000
    sine = np.round(32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert dbfs(sine) == pytest.approx(0.0, abs=0.01)
    half = (sine // 2).astype(np.int16)
    assert dbfs(half) == pytest.approx(-6.02, abs=0.05)
    assert dbfs(np.zeros(160, np.int16)) == -100.0
    assert estimated_spl(-20.0, 90.0) == 70.0


def _utterance_peak(pcm: np.ndarray) -> float:
    meter = LoudnessMeter(DEFAULT_CALIBRATION_DB)
    for frame, voiced in zip(frames_of(pcm), vad_flags(pcm), strict=True):
        meter.update(frame, bool(voiced))
    return meter.peak_spl_db


def _louder_phone_pcm(path, gain_db: float) -> np.ndarray:
    """The recording played `gain_db` louder into the phone: the codec clips what exceeds full scale."""
    x = read_audio(path, 16000) * np.float32(10 ** (gain_db / 20))
    return mulaw.decode(to_phone(x, 16000))


def test_level_rises_by_the_gain_when_nothing_clips(speech_dir):
    rec = next(r for r in manifest() if r["name"].startswith("lhotse-speech__2412"))  # the quietest recording
    normal = phone_pcm(rec["name"])
    louder = _louder_phone_pcm(rec["path"], 6.0)
    assert _utterance_peak(louder) - _utterance_peak(normal) == pytest.approx(6.0, abs=0.5)


def test_normal_speech_reads_normal_and_14db_louder_reads_as_shouting(speech_dir):
    normal, loud = [], []
    for rec in manifest():
        normal.append(_utterance_peak(phone_pcm(rec["name"])))
        loud.append(_utterance_peak(_louder_phone_pcm(rec["path"], LOUDER_DB)))
    normal, loud = np.array(normal), np.array(loud)
    # Mostly normal speech: these are studio and broadcast recordings, a JFK oration among them.
    assert np.mean(normal < SHOUTING_SPL) >= 0.9
    assert 60.0 < np.median(normal) < 75.0
    assert (loud > SHOUTING_SPL).all()
    # Louder by close to 14 dB; less where the phone line's clipping eats the peaks.
    rise = loud - normal
    assert np.all(rise > 7.0) and np.all(rise <= LOUDER_DB + 0.5)
    assert np.median(rise) > 11.0


def test_unvoiced_frames_do_not_drag_the_level_down(speech_dir):
    pcm = phone_pcm("coqui-ai__LJ001-0013")
    flags = vad_flags(pcm)
    meter = LoudnessMeter()
    for frame, voiced in zip(frames_of(pcm), flags, strict=True):
        meter.update(frame, bool(voiced))
    level = meter.spl_db
    for _ in range(100):  # 2 s of line noise after the caller stops
        meter.update(np.zeros(160, np.int16), False)
    assert meter.spl_db == level


def test_peak_is_per_utterance_and_a_short_loud_syllable_is_not_shouting():
    t = np.arange(160) / 8000
    loud = np.round(30000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)  # about -0.8 dBFS
    quiet = (loud // 20).astype(np.int16)  # 26 dB lower: ordinary telephone speech level
    meter = LoudnessMeter()
    for _ in range(60):
        meter.update(loud, True)
    assert meter.peak_spl_db > SHOUTING_SPL

    meter.reset_utterance()
    for _ in range(60):
        meter.update(quiet, True)
    assert meter.peak_spl_db == pytest.approx(meter.spl_db)  # the shouted utterance before is forgotten
    assert meter.peak_spl_db < SHOUTING_SPL - 10

    meter.reset_utterance()
    for i in range(100):
        meter.update(loud if 40 <= i < 43 else quiet, True)  # one 60 ms loud syllable in a quiet sentence
    assert meter.peak_spl_db < SHOUTING_SPL  # a single frame would read ~86 dB SPL unsmoothed
    assert meter.peak_spl_db > meter.spl_db  # but the peak did notice it
