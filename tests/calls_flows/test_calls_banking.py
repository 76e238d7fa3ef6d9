"""The banking line, a whole live call with the real models: an unknown caller reporting a lost card is handed
to a person with the flow's reason. (Card numbers typed during the PCI slot, masked everywhere: tests/session/.)"""

from __future__ import annotations

import pytest

from telephony.simcaller import PressDigits
from tests.calls_flows.conftest import Caller, HearFor, WaitForReply

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
