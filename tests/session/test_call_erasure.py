"""Erasure by phone number, seen by an auditor: after it, nothing the caller said is in the database file (an
unidentified call, a call a crashed process left open, an escalated call, a call still live), nothing is kept
in the server's memory, and the audit log says who erased what, with counts only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ivr.privacy import ErasureRequest
from tests.helpers.virtual_call import MARIA, UNKNOWN, Harness

pytestmark = pytest.mark.looptime


def database_bytes(h: Harness) -> bytes:
    db_file = Path(h.services.db.sync.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in db_file.parent.iterdir() if p.name.startswith(db_file.name))


async def test_erasure_by_phone_number_leaves_no_transcript_of_that_caller_anywhere(make_harness):
    h = await make_harness()
    db = h.services.db.sync

    # Unidentified (the number is not in the CRM), ended normally.
    plain = await h.call(UNKNOWN).start()
    await plain.wait(1.0)
    await plain.say("my neighbour knows about the alphaword parcel")
    await plain.wait_for_bot()
    await plain.finish()

    # Escalated: its transcript is in the handoff payload and its context stays in memory for a transfer back.
    escalated = await h.call(UNKNOWN).start()
    await escalated.wait(1.0)
    await escalated.say("I want to speak to a real person about bravoword")
    await escalated.wait_for(lambda: bool(db.list_escalations()), what="escalation")
    await escalated.finish()
    assert escalated.call_sid in h.services.contexts

    # Left open by a process that crashed mid-call, the number written another way.
    db.start_call("CAcrashed", stream_sid="MZcrashed", caller="(415) 555-0199", params={})
    db.add_turn("CAcrashed", idx=0, channel="voice", text="the charlieword story")

    # Live right now.
    live = await h.call(UNKNOWN).start()
    await live.wait(1.0)
    await live.say("deltaword is my mother's maiden name")
    await live.wait_for_bot()

    # Another caller, who keeps everything.
    other = await h.call(MARIA).start()
    await other.wait(1.0)
    await other.say("where is my echoword espresso machine")
    await other.wait_for_bot()
    await other.finish()

    raw = database_bytes(h)
    for word in (b"alphaword", b"bravoword", b"charlieword", b"deltaword", b"echoword"):
        assert word in raw  # the test would see each transcript if it were left behind

    counts = await h.services.erase_personal_data(ErasureRequest.build(phone="+1 415 555 0199"), actor="dpo@example")

    assert counts["calls"] == 4 and counts["live_calls"] == 1 and counts["contexts"] >= 1
    assert live.session.ended.is_set()
    assert escalated.call_sid not in h.services.contexts and live.call_sid not in h.services.sessions
    raw = database_bytes(h)
    for word in (b"alphaword", b"bravoword", b"charlieword", b"deltaword"):
        assert word not in raw, word
    assert b"echoword" in raw
    assert [c["call_sid"] for c in db.list_calls()] == [other.call_sid]
    assert db.list_escalations() == []

    (entry,) = [a for a in db.list_audit() if a["action"] == "erase"]
    assert entry["actor"] == "dpo@example"
    assert entry["subject"] == "phone:+1415555****"
    assert entry["details"]["calls"] == 4 and entry["details"]["turns"] >= 4 and entry["details"]["live_calls"] == 1
    # What the entry says (not its chain hashes, whose hex digits can hold "0199" by chance).
    said = json.dumps({k: v for k, v in entry.items() if k not in ("hash", "prev_hash")})
    assert "0199" not in said and "word" not in said
    assert db.verify_audit().ok


async def test_erasure_by_customer_id_finds_a_call_that_never_ended(make_harness):
    """The customer id is on the call as soon as the caller is identified, not only at a clean end."""
    h = await make_harness()
    db = h.services.db.sync
    call = await h.call(MARIA).start()
    await call.wait(1.0)
    await call.say("where is my foxtrotword espresso machine")
    await call.wait_for_bot()
    customer_id = db.get_call(call.call_sid)["customer_id"]
    assert customer_id  # identified from caller ID by the CRM, recorded mid-call

    counts = await h.services.erase_personal_data(ErasureRequest.build(customer_id=customer_id), actor="dpo")

    assert counts["calls"] == 1 and counts["live_calls"] == 1
    assert b"foxtrotword" not in database_bytes(h)
    assert [(a["action"], a["subject"]) for a in db.list_audit() if a["action"].startswith("erase")] == [
        ("erase_customer", customer_id)
    ]


async def test_escalated_contexts_in_memory_are_bounded_by_the_privacy_settings(make_harness):
    h = await make_harness(privacy={"context_max": 1})
    db = h.services.db.sync
    sids = []
    for _ in range(2):
        call = await h.call(UNKNOWN).start()
        await call.wait(1.0)
        await call.say("I want to speak to a real person")
        await call.wait_for(lambda c=call: any(e["call_sid"] == c.call_sid for e in db.list_escalations()))
        await call.finish()
        sids.append(call.call_sid)
    assert sids[0] not in h.services.contexts and sids[1] in h.services.contexts
    assert len(h.services.contexts) == 1


async def test_the_admin_api_erases_a_number_in_the_running_server(make_harness):
    from ivr.app import build_app
    from tests.helpers.virtual_call import _InProcessSession

    h = await make_harness()
    db = h.services.db.sync
    call = await h.call(UNKNOWN).start()
    await call.wait(1.0)
    await call.say("I want to speak to a real person about golfword")
    await call.wait_for(lambda: bool(db.list_escalations()), what="escalation")
    await call.finish()
    assert call.call_sid in h.services.contexts
    api = _InProcessSession(build_app(h.services))
    body = {"phone": UNKNOWN, "actor": "dpo@example"}

    async with api.request("POST", "http://ivr.test/api/erasure", json=body) as refused:
        assert refused.status == 401
    bad = {"phone": "12", "actor": "dpo@example"}
    auth = {"Authorization": "Bearer test-api-token"}
    async with api.request("POST", "http://ivr.test/api/erasure", json=bad, headers=auth) as invalid:
        assert invalid.status == 400
    async with api.request("POST", "http://ivr.test/api/erasure", json=body, headers=auth) as done:
        assert done.status == 200
        erased = json.loads(b"".join([chunk async for chunk in done.content.iter_chunked(4096)]))["erased"]

    assert erased["calls"] == 1 and erased["contexts"] == 1 and erased["escalations"] == 1
    assert call.call_sid not in h.services.contexts
    assert b"golfword" not in database_bytes(h)
    assert [a["actor"] for a in db.list_audit() if a["action"] == "erase"] == ["dpo@example"]
