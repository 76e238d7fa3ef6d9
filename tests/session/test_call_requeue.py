"""A transfer nobody answers, through whole calls on virtual time: the caller comes back to our stream at the head
of the queue, is not greeted as a new caller, and hanging up then leaves the queue as abandoned."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ivr import agents as ag
from ivr.prompts import HOLD_LINE
from tests.helpers.virtual_call import JAMES, Harness, VirtualCall

pytestmark = pytest.mark.looptime

BOB = "+14155550142"
NOW = datetime(2025, 11, 24, 12, 0, tzinfo=UTC)


def escalations_of(h: Harness, call_sid: str) -> list[dict[str, Any]]:
    return [e for e in h.services.db.sync.list_escalations() if e["call_sid"] == call_sid]


async def test_a_missed_transfer_brings_the_caller_back_on_hold_at_the_head_not_to_the_greeting(make_harness):
    h = await make_harness()
    desk = h.services.desk
    assert desk is not None
    db = h.services.db
    await db.run(
        ag.add_agent, db.sync, "bob", display_name="Bob", reach=ag.Reach.parse(BOB), password="x" * 12, now=NOW
    )
    await db.run(ag.set_status, db.sync, "bob", "available", now=NOW)

    first: VirtualCall = await h.call(JAMES).start()
    await first.wait(1.0)
    await first.say("I want to speak to a real person.")
    await first.wait_for(lambda: bool(escalations_of(h, first.call_sid)) and HOLD_LINE in first.heard_text())
    [row] = escalations_of(h, first.call_sid)
    accepted = await desk.accept(row["id"], "bob")
    gone = await first.finish()  # Twilio ends our stream once the call is redirected to Bob's phone
    assert gone["end_reason"] == "transferred_to_agent"

    # Bob's phone rings out: Twilio asks the dial's action URL what next, and the caller comes back to us.
    form = {"CallSid": first.call_sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer", "From": JAMES}
    twiml = await desk.dial_ended(accepted["leg_id"], form)
    assert "<Connect><Stream" in twiml
    back: VirtualCall = await h.call(JAMES, call_sid=first.call_sid).start()
    await back.wait(5.0)
    assert "Thanks for calling Acme Shop" not in back.heard_text()  # on hold, not a new caller
    snap = await desk.snapshot()
    assert [(i["call_sid"], i["requeued"]) for i in snap["items"]] == [(first.call_sid, True)]
    bob = await db.run(ag.get_agent, db.sync, "bob")
    assert bob is not None and bob["status"] == "away"

    record = await back.finish()  # then the caller gives up
    assert record["outcome"] == "escalated"
    await back.wait_for(lambda: escalations_of(h, first.call_sid)[0]["status"] == "abandoned", what="abandoned")
    assert (await desk.snapshot())["items"] == []
