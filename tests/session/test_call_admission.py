"""Admission control on virtual time (ivr/admission.py): at capacity a new caller hears that all lines are busy,
is texted a callback link and the call ends, while the calls already up go on being served."""

from __future__ import annotations

import asyncio

import pytest

from ivr.admission import BUSY_LINE
from tests.helpers.virtual_call import JAMES, MARIA, UNKNOWN

pytestmark = pytest.mark.looptime


async def test_a_call_over_capacity_hears_all_lines_busy_gets_a_callback_link_and_the_others_are_unaffected(
    make_harness,
):
    h = await make_harness(admission={"max_calls": 1})
    first = await h.call(JAMES).start()
    await first.wait_for_bot()
    second = await h.call(MARIA).start()
    await asyncio.wait_for(second.session.ended.wait(), 30.0)
    busy_record = await second.finish()

    assert BUSY_LINE in second.heard_text()
    assert busy_record["end_reason"] == "all_lines_busy" and busy_record["outcome"] == "busy"
    (refused,) = second.events(busy_record, "refused_busy")
    assert refused["capacity"] == 1 and refused["live_calls"] == 2
    assert [m["to"] for m in h.twilio.sms] == [MARIA]
    (callback,) = [c for c in h.services.db.sync.list_callbacks() if c["call_sid"] == second.call_sid]
    assert callback["token"] in h.twilio.sms[0]["body"]
    assert h.metric("ivr_calls_refused_busy_total") == 1 and h.metric("ivr_capacity_calls") == 1

    # The call already up is still served: it is answered as before.
    await first.say("I'd like to return something")
    await first.wait_for_bot()
    first_record = await first.finish()
    assert [t["text"] for t in first_record["turns"]] == ["I'd like to return something"]
    assert first.events(first_record, "refused_busy") == []

    # Once a line is free, the next caller is served again.
    third = await h.call(UNKNOWN, call_sid="CA" + "3" * 32).start()  # (the helper may reuse a finished call's id)
    await third.wait_for_bot()
    third_record = await third.finish()
    assert third.events(third_record, "refused_busy") == [] and BUSY_LINE not in third.heard_text()
