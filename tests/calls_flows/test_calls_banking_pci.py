"""Card numbers typed on the keypad never leave the call: not in logs (any logger, DEBUG), the database file,
the records API, escalation payloads, /metrics, what the bank system or Twilio receive, or what the bot sends.
Only the last four digits reach crm.block_card."""

from __future__ import annotations

import json
import logging
import re

import pytest

from telephony import events
from telephony.simcaller import PressDigits
from tests.calls_flows.conftest import Caller, Do, HearFor, WaitForReply, crm_journal

pytestmark = pytest.mark.slow

JAMES = "+14155550101"  # his only card ends 1188, so the bank cannot confirm a block of ...1111
CARD = "4111111111111111"


def leaks(text: str) -> list[str]:
    """Places where the full number or its first 12 digits appear, also with spaces, dashes or quotes between."""
    hits = []
    for digits in (CARD, CARD[:12]):
        pattern = r"\D{0,3}".join(digits)
        hits += [text[max(0, m.start() - 40) : m.end() + 40] for m in re.finditer(pattern, text)]
    return hits


async def test_typed_card_number_is_nowhere_but_its_last_four_reach_the_bank(start_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = await start_server(flow="banking")
    caller = Caller(server.ws_url, from_number=JAMES)
    sms_sent = lambda reqs: any(r.path.endswith("Messages.json") for r in reqs)
    result = await caller.run(
        [
            HearFor(1.0),
            PressDigits("1"),  # lost card
            WaitForReply(heard_s=1.0),
            PressDigits(CARD + "#", gap_s=0.1),
            WaitForReply(heard_s=0.5),
            PressDigits("1"),  # the count is right
            WaitForReply(heard_s=0.5),
            # The bank cannot confirm the block: a person takes over, and the caller gets a callback link by SMS.
            Do(lambda: server.recorder.wait_for(sms_sent, timeout=10), "wait for the SMS"),
        ]
    )
    result.print_timeline()
    sid = caller.call_sid
    record = await server.wait_call_closed(sid)

    # The call did what it should with the number, without keeping it.
    menu, card, confirm = record["turns"]
    assert menu["text"] == "1" and "Please don't say it out loud." in menu["reply"]
    assert card["text"] == "[keypad entry withheld: 16 digits]" and card["reply"].startswith("I got 16 digits.")
    assert "couldn't confirm the block" in confirm["reply"]
    assert len(record["escalations"]) == 1
    assert [e["data"]["digit"] for e in record["events"] if e["kind"] == "dtmf"][1:] == ["*"] * 18

    blocks = [r for r in await crm_journal(server) if r["path"].endswith("/cards/block")]
    assert len(blocks) == 1 and json.loads(blocks[0]["body"]) == {"card_last4": "1111"}

    places: dict[str, str] = {}
    places["logs"] = "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records)
    assert sid in places["logs"]  # the logs did capture this call at DEBUG
    data_dir = server.settings.data_dir
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("ivr.sqlite3") for p in files)
    for path in files:
        places[f"file {path.relative_to(data_dir)}"] = path.read_bytes().decode("latin-1")
    status, api_record = await server.get_json(f"/api/calls/{sid}")
    assert status == 200
    places["records API"] = json.dumps(api_record)
    places["escalation queue"] = json.dumps(await server.services.db.run(server.services.db.sync.list_escalations))
    status, metrics = await server.get_json("/metrics", token=None)
    assert status == 200
    places["/metrics"] = metrics
    places["CRM requests"] = json.dumps(await crm_journal(server))
    twilio = server.recorder.requests
    assert any(r.path.endswith("Messages.json") for r in twilio)
    places["Twilio requests"] = json.dumps([[r.method, r.path, r.form, r.headers] for r in twilio])
    places["sent to the caller"] = repr([m for m in result.received_commands if not isinstance(m, events.PlayAudio)])

    found = {where: hits for where, text in places.items() if (hits := leaks(text))}
    assert found == {}


async def test_flow_handover_tells_the_agent_why_and_uses_the_flows_queue(start_server):
    """An unknown caller reporting a lost card is handed over by the flow (`unknown_caller`): the agent must see
    the flow's reason, in the banking queue, not a generic 'the flow handed over: flow' in 'general'."""
    server = await start_server(flow="banking")
    caller = Caller(server.ws_url, from_number="+14155550199")  # no account
    await caller.run([HearFor(1.0), PressDigits("1"), WaitForReply(heard_s=0.5)])
    record = await server.wait_call_closed(caller.call_sid)

    assert record["turns"][0]["reply"].startswith("I couldn't find an account for this number")
    (escalation,) = record["escalations"]
    assert "no account found for the caller's number" in escalation["reason"].lower(), escalation["reason"]
    assert escalation["queue"] == "banking"
