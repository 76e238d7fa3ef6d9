"""The loop `ivr serve` runs on (ivr/event_loop.py): uvloop by default, asyncio's own on request, and a whole
call -- speech heard, a reply, a barge-in -- through the live server on uvloop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jiwer
import pytest
import uvloop

from bench.server import start_server
from ivr.config import Settings
from ivr.event_loop import run
from models.asr_text import normalize_transcript
from telephony.simcaller import CallResult, Pause, PlayAudio, SimulatedCaller
from tests.helpers.speech import phone_recording, transcript

MARIA = "+14155550100"  # in the demo CRM, with an order in transit: a long greeting to interrupt


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_the_server_runs_on_uvloop_unless_told_to_use_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().event_loop == "uvloop"
    assert run(_loop_type(), Settings().event_loop) is uvloop.Loop
    monkeypatch.setenv("IVR_EVENT_LOOP", "asyncio")
    kind = Settings.load().event_loop
    assert kind == "asyncio"
    assert not issubclass(run(_loop_type(), kind), uvloop.Loop)
    monkeypatch.setenv("IVR_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings.load()


async def _call_on_the_server(models: Any, data_dir: Path, name: str) -> tuple[CallResult, dict[str, Any] | None]:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    # Built as `ivr serve` builds it, in this process, on the loop this coroutine runs on.
    server = await start_server(Settings(), models, data_dir)
    try:
        caller = SimulatedCaller(server.ws_url, from_number=MARIA)
        result = await caller.run([Pause(2.0), PlayAudio(phone_recording(name), name), Pause(3.0)])
        return result, await server.call_record(caller.call_sid)
    finally:
        await server.close()


@pytest.mark.slow
def test_a_call_on_uvloop_is_heard_answered_and_interrupted(shared_models: Any, tmp_path: Path) -> None:
    name = "cmusphinx__003.wav"
    result, record = run(_call_on_the_server(shared_models, tmp_path, name), "uvloop")

    assert record is not None and record["ended_at"]
    said = [e.t for e in result.timeline if e.who == "caller" and name in e.what][0]
    cleared = [e.t for e in result.timeline if e.who == "server" and e.what.startswith("clear")]
    assert cleared and cleared[0] > said, "the caller's speech did not interrupt the greeting"
    heard = " ".join(t["text"] for t in record["turns"] if t["channel"] == "voice")
    assert jiwer.wer(normalize_transcript(transcript(name)), normalize_transcript(heard)) < 0.3, heard
    replied = [t for t in result.frame_arrivals if t > said + 1.5]  # 1.5 s: the recording, then the endpoint
    assert replied, "no reply after the caller spoke"
