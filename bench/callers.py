"""The caller process: simulated Twilio callers (`telephony.simcaller`), spawned apart from the server.

Everything here runs in that process and returns plain data, so it crosses the process boundary.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench.speech import Script
from bench.stats import LoopLag
from telephony.events import Clear, Mark, OutboundCommand, PlayAudio
from telephony.simcaller import PlayAudio as Speak
from telephony.simcaller import SimulatedCaller, Step, WaitForBot

UNKNOWN_CALLER = "+12025550199"  # not in the demo CRM: the short greeting, the same for every caller
FRAME = 160
FRAME_S = 0.020
STALL_S = 0.160


@dataclass(frozen=True)
class CallPlan:
    ws_url: str
    script: Script
    delay_s: float = 0.0


@dataclass
class CallerSummary:
    """What one simulated caller measured."""

    call_sid: str
    response_latencies_s: list[float]
    replied_to_s: list[float]  # when the utterance each latency answers ended (seconds after start)
    first_audio_after_start_s: float | None
    duration_s: float
    closed_by_server: bool
    plays: list[tuple[str, float, int]]  # (label, seconds after start, frames) of each utterance spoken
    clears: int  # barge-ins the server acted on
    late_mid_sentence: int
    max_mid_sentence_gap_ms: float
    sentence_stalls: int
    unanswered: int
    error: str | None = None
    after_recording_s: list[float] = field(default_factory=list)  # end of the recording -> first reply frame
    reply_stalls: int = 0  # reply frames more than STALL_S behind real-time pace


def late_audio(commands: list[OutboundCommand], frame_arrivals: list[float], lead_s: float) -> dict[str, Any]:
    """Where the caller's playback buffer ran dry while the bot was talking.

    The server sends each sentence as frames followed by a mark (`<label>#<turn>:<frames>`) and keeps about
    `lead_s` of audio buffered at the caller. Between two frames of one sentence, an arrival gap longer than
    the lead plus one frame means the buffer emptied: the caller heard a hole mid-sentence ("late").
    The same gap between two sentences of one reply is a stall (a pause between sentences, less bad).
    """
    threshold = lead_s + FRAME_S
    chunks: list[tuple[str | None, list[float]]] = []  # (turn id from the closing mark, arrivals)
    current: list[float] = []
    i = 0
    for command in commands:
        if isinstance(command, PlayAudio):
            frames = max(1, len(command.payload) // FRAME)
            current.extend(frame_arrivals[i : i + frames])
            i += frames
        elif isinstance(command, Mark):
            name = command.name
            turn = name.rsplit(":", 1)[0].split("#")[-1] if "#" in name else None
            chunks.append((turn, current))
            current = []
        elif isinstance(command, Clear):
            chunks.append((None, current))
            current = []
    if current:
        chunks.append((None, current))
    late = 0
    max_gap = 0.0
    stalls = 0
    prev_turn: str | None = None
    prev_last: float | None = None
    for turn, arrivals in chunks:
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
        if gaps:
            max_gap = max(max_gap, max(gaps))
        late += sum(1 for g in gaps if g > threshold)
        if arrivals and prev_last is not None and turn is not None and turn == prev_turn:
            if arrivals[0] - prev_last > threshold:
                stalls += 1
        if arrivals:
            prev_last = arrivals[-1]
            prev_turn = turn
    return {"late_mid_sentence": late, "max_mid_sentence_gap_ms": round(max_gap * 1000, 1), "sentence_stalls": stalls}


def reply_stalls(commands: list[OutboundCommand], frame_arrivals: list[float], stall_s: float = STALL_S) -> int:
    """Times a reply fell more than `stall_s` behind real-time pace: the caller heard a gap.

    A reply (one turn: its chunks, each closed by a mark naming the turn) should arrive at 20 ms a frame from the
    moment the caller starts hearing it on; a frame later than that pace by more than `stall_s` is a stall, and
    the pace restarts from it (one gap is one stall, not one per frame after it). A clear ends the reply.

    The caller starts hearing a reply when its first frame arrives or, if the reply before it is still playing
    from the carrier's buffer (a reply that follows another at once, sent up to the playout lead ahead), when
    that one ends: the pace of a reply queued behind another runs from where the caller's playback reaches it.
    """
    chunks: list[tuple[str | None, list[float]]] = []  # (turn named by the closing mark, arrivals)
    current: list[float] = []
    i = 0
    for command in commands:
        if isinstance(command, PlayAudio):
            n = max(1, len(command.payload) // FRAME)
            current.extend(frame_arrivals[i : i + n])
            i += n
        elif isinstance(command, Mark):
            name = command.name
            chunks.append((name.rsplit(":", 1)[0].split("#")[-1] if "#" in name else None, current))
            current = []
        elif isinstance(command, Clear):
            chunks.append((None, current))
            chunks.append(("<clear>", []))
            current = []
    if current:
        chunks.append((None, current))
    stalls = 0
    turn: str | None = None
    anchor: tuple[float, int] | None = None  # (when it plays, frame number in the reply) the pace runs from
    frames_in_reply = 0
    played_until = float("-inf")  # when the audio received so far has finished playing at the caller
    for chunk_turn, arrivals in chunks:
        if chunk_turn == "<clear>":
            played_until = float("-inf")  # a clear empties the caller's buffer
        if chunk_turn is None or chunk_turn != turn:
            anchor, frames_in_reply = None, 0
        turn = chunk_turn
        for t in arrivals:
            plays_at = max(t, played_until)
            if anchor is None:
                anchor = (plays_at, frames_in_reply)
            due = anchor[0] + (frames_in_reply - anchor[1]) * FRAME_S
            if t - due > stall_s:
                stalls += 1
                anchor = (plays_at, frames_in_reply)
            played_until = plays_at + FRAME_S
            frames_in_reply += 1
    return stalls


def after_recording(
    latencies: list[float], replied_to: list[float], plays: list[tuple[str, float, int]]
) -> list[float]:
    """Each response latency measured from the end of the recording it answers instead of its last voiced frame."""
    out = []
    for lat, voiced_end in zip(latencies, replied_to, strict=True):
        ends = [t + frames * FRAME_S for _, t, frames in plays if t <= voiced_end + FRAME_S]
        end = ends[-1] if ends else voiced_end
        out.append(voiced_end + lat - max(end, voiced_end - 2.0))
    return out


async def one_caller(plan: CallPlan, lead_s: float, reply_timeout_s: float) -> CallerSummary:
    await asyncio.sleep(plan.delay_s)
    caller = SimulatedCaller(plan.ws_url, from_number=UNKNOWN_CALLER)
    # A patient caller: waits for a full second of quiet, so a short pause between two bot sentences is not
    # taken for the end of the reply (that would make the caller barge in).
    steps: list[Step] = [WaitForBot(timeout_s=30.0, quiet_s=1.0)]
    for label, audio in plan.script:
        steps += [Speak(audio, label), WaitForBot(timeout_s=reply_timeout_s, quiet_s=1.0)]
    try:
        result = await caller.run(steps)
    except Exception as exc:  # noqa: BLE001 - one failed caller is reported, the others still count
        return CallerSummary(
            caller.call_sid,
            [],
            [],
            None,
            0.0,
            False,
            [],
            0,
            0,
            0.0,
            0,
            len(plan.script),
            f"{type(exc).__name__}: {exc}",
        )
    frames_by_label = {label: len(audio) // FRAME for label, audio in plan.script}
    plays = []
    for entry in result.timeline:
        if entry.who == "caller" and entry.what.startswith("plays "):
            label = entry.what[len("plays ") :].rsplit(" (", 1)[0]
            plays.append((label, entry.t, frames_by_label.get(label, 0)))
    late = late_audio(result.received_commands, result.frame_arrivals, lead_s)
    return CallerSummary(
        call_sid=result.call_sid,
        response_latencies_s=list(result.response_latencies_s),
        replied_to_s=list(result.replied_to_s),
        first_audio_after_start_s=result.first_audio_after_start_s,
        duration_s=result.timeline[-1].t if result.timeline else 0.0,
        closed_by_server=result.closed_by_server,
        plays=plays,
        clears=result.clears,
        unanswered=max(0, len(plan.script) - len(result.response_latencies_s)),
        after_recording_s=after_recording(list(result.response_latencies_s), list(result.replied_to_s), plays),
        reply_stalls=reply_stalls(result.received_commands, result.frame_arrivals),
        **late,
    )


async def _run_callers(
    plans: list[CallPlan], lead_s: float, reply_timeout_s: float
) -> tuple[list[CallerSummary], list[float]]:
    lag = LoopLag()
    lag.start()
    summaries = list(await asyncio.gather(*(one_caller(p, lead_s, reply_timeout_s) for p in plans)))
    await lag.stop()
    return summaries, lag.samples


def callers_process_main(
    plans: list[CallPlan], lead_s: float, reply_timeout_s: float
) -> tuple[list[CallerSummary], float, list[float]]:
    """Entry point of the caller process: the callers' summaries, the CPU seconds they used, and how late the
    process's event loop woke (each sample of `LoopLag`): a late caller loop stamps replies late."""
    from ivr.event_loop import run

    cpu0 = time.process_time()
    # uvloop whatever the server runs on: the callers stand in for the carrier's network, and the less CPU they
    # take from the two cores the server shares with them, the less they disturb what is measured.
    summaries, lag = run(_run_callers(plans, lead_s, reply_timeout_s), "uvloop")
    return summaries, time.process_time() - cpu0, lag
