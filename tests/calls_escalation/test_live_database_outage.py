"""The real-model tier of a database outage: over the live server (real sockets, Whisper, Piper, the storage
thread), a caller who asks for a person while the database refuses every write is still queued at the desk and,
taking the callback offer (1), texted; the records land once the database is back. The rest of the outage cases run on virtual time
(tests/session/test_call_faults.py) and against a hung database (tests/server/test_storage_outage.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ivr.storage_queue import StorageConfig
from telephony.simcaller import Pause, PlayAudio, PressDigits
from tests.calls_escalation.call_driver import JAMES, Caller, Until, hold_line_audio
from tests.helpers.faults import database_down

pytestmark = pytest.mark.slow


async def test_with_the_database_down_a_live_caller_is_texted_and_queued_and_the_records_land_later(
    start_server, synth_phone
):
    server = await start_server(storage=StorageConfig(timeout_s=1.0, retry_s=0.5))
    caller = Caller(server.ws_url, from_number=JAMES)
    restore: list[Callable[[], None]] = []
    opening = hold_line_audio(server)[:2400]

    async def take_the_database_down() -> bool:
        restore.append(database_down(server.services.db.sync))
        return True

    async def on_hold() -> bool:
        return caller.heard(opening)

    async def texted() -> bool:
        return bool(server.recorder.find("Messages.json"))

    async def let_go() -> bool:
        return caller.call_sid not in server.services.sessions  # the goodbye played and the bot hung up

    queued: list[dict] = []

    async def at_the_desk() -> bool:
        snapshot = await server.services.desk.snapshot()
        queued[:] = [i for i in snapshot["items"] if i["call_sid"] == caller.call_sid]
        return bool(queued)

    await caller.run(
        [
            Pause(1.0),
            Until(take_the_database_down, what="database down"),
            PlayAudio(synth_phone("I want to speak to a real person."), "ask for person"),
            Until(on_hold, timeout_s=40, what="the hold line"),
            Until(at_the_desk, what="the caller at the desk"),
            PressDigits("1"),
            Until(texted, timeout_s=20, what="the SMS once the offer is taken"),
            Until(let_go, timeout_s=30, what="the goodbye and the hang-up"),
        ]
    )
    assert queued[0]["stored"] is False and queued[0]["trigger"] == "caller_request"
    assert server.services.db.sync.list_escalations() == []

    restore[0]()
    for _ in range(100):  # the spool retries every 0.5 s
        if server.services.db.available:
            break
        await asyncio.sleep(0.1)
    record = await server.wait_call_closed(caller.call_sid, timeout=15.0)
    assert [(e["trigger"], e["status"]) for e in record["escalations"]] == [("caller_request", "callback")]
    assert record["outcome"] == "callback" and record["end_reason"] == "callback_requested"
    [callback] = [c for c in server.services.db.sync.list_callbacks() if c["call_sid"] == caller.call_sid]
    assert callback["status"] == "sent"
