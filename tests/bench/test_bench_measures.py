"""What the bench counts, on made-up arrivals: reply stalls against real-time pace and latency from the end
of the recording (pure functions of what a caller received; no server); which machine ran it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.callers import STALL_S, after_recording, reply_stalls
from bench.report import build_results, cpu_info
from telephony.events import Clear, Mark, PlayAudio

FRAME = b"\xff" * 160


def reply(turn: int, frames: int) -> list[PlayAudio | Mark]:
    return [PlayAudio(FRAME) for _ in range(frames)] + [Mark(f"say#{turn}:{frames}")]


def paced(start: float, frames: int) -> list[float]:
    return [start + 0.02 * i for i in range(frames)]


def test_a_reply_on_pace_or_ahead_of_it_has_no_stall():
    commands = reply(1, 50)
    assert reply_stalls(commands, paced(1.0, 50)) == 0
    # Sent 100 ms ahead in a burst, then paced: never behind.
    assert reply_stalls(commands, [1.0] * 5 + paced(1.02, 45)) == 0


def test_a_gap_longer_than_the_limit_is_one_stall_and_the_pace_restarts_after_it():
    arrivals = paced(1.0, 20) + paced(1.4 + STALL_S + 0.05, 30)  # 20 frames, then the rest too late
    assert reply_stalls(reply(1, 50), arrivals) == 1
    # A gap just under the limit is not a stall.
    assert reply_stalls(reply(1, 50), paced(1.0, 20) + paced(1.4 + STALL_S - 0.03, 30)) == 0


def test_the_pause_between_two_replies_is_not_a_stall_but_a_gap_between_sentences_of_one_reply_is():
    two_replies = reply(1, 10) + reply(2, 10)
    assert reply_stalls(two_replies, paced(1.0, 10) + paced(5.0, 10)) == 0
    two_sentences = reply(1, 10) + reply(1, 10)
    assert reply_stalls(two_sentences, paced(1.0, 10) + paced(1.2 + STALL_S + 0.1, 10)) == 1
    cleared = reply(1, 10)[:-1] + [Clear()] + reply(1, 10)
    assert reply_stalls(cleared, paced(1.0, 10) + paced(3.0, 10)) == 0


def test_a_reply_queued_behind_another_is_paced_from_when_it_starts_playing():
    """A reply sent at once after another, while 0.36 s of that one is still in the caller's buffer: its chunks
    keep that far ahead of playback, so they arrive up to 0.36 s after its first frame and the caller hears no
    gap; counted from its first arrival it looked like a stall."""
    commands = reply(2, 20) + reply(3, 40)
    first = paced(1.0, 20)  # reply 2 plays 1.0 .. 1.4
    # Reply 3's first chunk arrives at 1.04 with reply 2 still playing; the rest a 100 ms chunk at a time, each
    # 150 ms before it plays (a busy server topping the buffer up late, but in time).
    second = [1.04] * 5 + [1.4 + 0.1 * (k + 1) - 0.15 for k in range(7) for _ in range(5)]
    assert reply_stalls(commands, first + second) == 0
    # The same reply falling behind its playback by more than the limit is still a stall.
    late = [1.04] * 5 + [1.4 + 0.1 + STALL_S + 0.05] + [1.4 + 0.1 + STALL_S + 0.05 + 0.02 * k for k in range(1, 35)]
    assert reply_stalls(commands, first + late) == 1


def test_latency_from_the_end_of_the_recording():
    # A 2 s recording played from t=1 s; the caller's VAD heard its last voice at 2.9 s; the reply came at 3.5 s.
    plays = [("rec", 1.0, 100)]
    (lat,) = after_recording([0.6], [2.9], plays)
    assert lat == pytest.approx(0.5)


def test_the_results_name_the_processor_and_its_vector_instructions(tmp_path: Path) -> None:
    # Two hosts of the same "2 cores" kind ran int8 Whisper 2.8x apart: the results say which one ran.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
    )
    assert cpu_info(str(cpuinfo)) == {"cpu_model": "AMD EPYC", "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}
    assert cpu_info(str(tmp_path / "absent")) == {}


def _level(callers: int, split: int = 0) -> dict:
    latency = {"n": 6, "p50_ms": 406.0, "p95_ms": 556.0}
    return {
        "callers": callers,
        "response_latency": latency,
        "response_after_recording": latency,
        "late_audio_mid_sentence": 0,
        "caller_errors": [],
        "reply_stalls": 0,
        "unanswered_within_3s": 0,
        "calls_refused_busy": 0,
        "recordings_split": split,
    }


def _targets(sweep: list[dict], *, peer: dict | None = None, turn_end: dict | None = None) -> dict:
    return build_results(
        sweep=sweep, codec={}, endpoint_sweep=[], offline=[], quick=False, turn_end=turn_end, peer=peer, wall_s=1.0
    )["targets"]


def test_the_results_say_whether_every_target_of_the_issue_holds():
    # Every Done-when item is in the results, not only the latency ones: the ratio to the peer and the splits.
    sweep = [_level(1), _level(40)]
    assert (
        _targets(sweep, peer={"peer_over_ours_p50_response_latency": 1.86})["1_caller_at_least_2x_faster_than_peer"]
        is False
    )
    assert _targets(sweep, peer={"peer_over_ours_p50_response_latency": 2.4})["1_caller_at_least_2x_faster_than_peer"]
    assert _targets(sweep)["1_caller_at_least_2x_faster_than_peer"] is None  # no peer run: not known
    assert _targets(sweep, turn_end={"recordings_split": 0})["no_recording_split"] is True
    assert _targets(sweep, turn_end={"recordings_split": 1})["no_recording_split"] is False  # offline, with Whisper
    assert _targets([_level(1), _level(40, split=1)])["no_recording_split"] is False  # on a live call
