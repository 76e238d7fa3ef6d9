"""The banking line, a whole live call with the real models: an unknown caller reporting a lost card is handed
to a person with the flow's reason; a known caller hears her balance only after her PIN. (Card numbers typed during the
PCI slot, masked everywhere: tests/session/.)"""

from __future__ import annotations

import pytest

from telephony.simcaller import PressDigits
from tests.calls_flows.conftest import Caller, HearFor, WaitForReply, crm_journal
from tests.helpers.leaks import without_times

pytestmark = pytest.mark.slow


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


async def test_the_balance_is_read_only_after_the_pin_and_the_pin_is_kept_nowhere(start_server):
    """Maria (demo CRM PIN 2580) asks for her balance by keypad: she is asked for her PIN first, and the balance
    follows the right one; the record holds the entry masked and the CRM's journal holds it withheld."""
    server = await start_server(flow="banking")
    caller = Caller(server.ws_url, from_number="+14155550100")
    await caller.run(
        [HearFor(1.0), PressDigits("2"), WaitForReply(heard_s=1.0), PressDigits("2580#"), WaitForReply(heard_s=3.0)]
    )
    record = await server.wait_call_closed(caller.call_sid)

    balance, pin = record["turns"][:2]
    assert "type your telephone banking PIN" in balance["reply"] and "balance is" not in balance["reply"]
    assert pin["text"] == "[keypad entry withheld: 4 digits]"
    assert "Your available balance is 182.4 USD" in pin["reply"]
    assert [e["data"]["outcome"] for e in record["events"] if e["kind"] == "verification"] == ["verified"]
    assert "2580" not in without_times(str(record)) and "2580" not in str(await crm_journal(server))
