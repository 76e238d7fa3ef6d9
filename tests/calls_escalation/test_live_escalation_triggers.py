"""Real calls through the live server until each escalation trigger fires: what is stored, what the caller hears.

Every call is real time over a loopback WebSocket; the caller's speech is Piper audio at 8 kHz mu-law. Callers
speak over the bot's prompts (barge-in), as impatient callers do, to keep the calls short.
"""

from __future__ import annotations

import pytest

from telephony.simcaller import Pause, PlayAudio, PressDigits, WaitForBot
from tests.calls_escalation.call_driver import (
    JAMES,
    MARIA,
    Caller,
    Until,
    assert_valid_handoff,
    escalate_call,
    escalated_and_on_hold,
    escalations_of,
    shout,
    timeline,
)

pytestmark = pytest.mark.slow


def _check_common(escalation: dict, record: dict, from_number: str) -> dict:
    """What every escalation must carry: a valid handoff that matches the row, and an escalated call record."""
    payload = escalation["payload"]
    assert_valid_handoff(payload)
    assert payload["call_sid"] == escalation["call_sid"] == record["call_sid"]
    for key in ("trigger", "reason", "queue", "priority"):
        assert payload[key] == escalation[key]
    assert escalation["status"] == "waiting"
    assert record["outcome"] == "escalated" and record["caller"] == from_number
    assert payload["transcript_url"].endswith(f"/api/calls/{record['call_sid']}")
    assert [e["data"]["trigger"] for e in record["events"] if e["kind"] == "escalation"] == [escalation["trigger"]]
    return payload


async def test_caller_asking_for_a_person_is_escalated_and_hears_the_hold_line(server_on_db, synth_phone):
    server = await server_on_db()
    escalation, record, result = await escalate_call(
        server, JAMES, [Pause(1.0), PlayAudio(synth_phone("I want to speak to a real person."), "ask for person")]
    )
    print(timeline(result))
    payload = _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "caller_request", escalation
    assert "person" in escalation["reason"].lower()
    assert escalation["queue"] == server.services.flow.queue  # no topic yet: the line's own queue
    assert 100 <= escalation["priority"] < 200  # a standard-tier customer
    assert payload["customer_id"] == "C1002"
    assert any("person" in m.lower() for m in payload["last_3_messages"])


async def test_legal_words_escalate_at_once_naming_the_words(server_on_db, synth_phone):
    server = await server_on_db()
    escalation, record, result = await escalate_call(
        server,
        JAMES,
        [Pause(1.0), PlayAudio(synth_phone("I'll get my lawyer and take you to court."), "legal threat")],
    )
    print(timeline(result))
    payload = _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "legal", escalation
    assert "'lawyer'" in escalation["reason"] and "'take you to court'" in escalation["reason"]
    assert (
        escalation["queue"] == server.services.flow.queue and 100 <= escalation["priority"] < 200
    )  # no topic: the line's queue
    assert payload["goodwill_offer"] is None  # a legal dispute never gets an improvised offer


async def test_the_words_that_triggered_a_policy_escalation_reach_the_agent(start_server, synth_phone):
    server = await start_server()
    escalation, record, _ = await escalate_call(
        server, JAMES, [Pause(1.0), PlayAudio(synth_phone("I'll get my lawyer and take you to court."), "legal")]
    )
    assert escalation["trigger"] == "legal"
    assert any("lawyer" in t["text"].lower() for t in record["turns"]), record["turns"]
    assert any("lawyer" in m.lower() for m in escalation["payload"]["last_3_messages"])


async def test_three_negative_phrases_over_two_turns_escalate(start_server, synth_phone):
    server = await start_server()
    escalation, record, result = await escalate_call(
        server,
        JAMES,
        [
            Pause(1.0),
            PlayAudio(synth_phone("This is unacceptable. It's ridiculous."), "negative 1"),
            WaitForBot(timeout_s=20),
            PlayAudio(synth_phone("Your service is useless."), "negative 2"),
        ],
    )
    print(timeline(result))
    _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "negative_phrases", escalation
    for word in ("unacceptable", "ridiculous", "useless"):
        assert f"'{word}'" in escalation["reason"]


async def test_shouting_caller_is_escalated_with_the_measured_level(start_server, synth_phone):
    server = await start_server()
    loud = shout(synth_phone("Where is my order? I have been waiting for weeks."))
    escalation, record, result = await escalate_call(
        server,
        JAMES,
        [Pause(1.0), PlayAudio(loud, "shouting 1"), WaitForBot(timeout_s=20), PlayAudio(loud, "shouting 2")],
    )
    print(timeline(result))
    _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "shouting", escalation
    assert "shouting" in escalation["reason"].lower() and "dB SPL" in escalation["reason"]
    assert escalation["queue"] == "delivery"  # "where is my order": the delivery team
    levels = [t["loudness_spl_db"] for t in record["turns"] if t["loudness_spl_db"] is not None]
    assert levels and max(levels) > server.settings.audio.shouting_spl_db


async def test_still_unclear_after_one_clarification_escalates_for_low_confidence(start_server, synth_phone):
    server = await start_server()
    escalation, record, result = await escalate_call(
        server,
        JAMES,
        [
            Pause(1.0),
            PlayAudio(synth_phone("Purple elephants juggle the moon."), "nonsense 1"),
            WaitForBot(timeout_s=20),
            PlayAudio(synth_phone("Banana telephone on a Tuesday."), "nonsense 2"),
        ],
    )
    print(timeline(result))
    payload = _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "low_confidence", escalation
    assert "clarif" in escalation["reason"].lower()
    assert payload["confidence"] is None or payload["confidence"] < server.services.answer_threshold


async def test_repeated_backend_failures_escalate(start_server):
    server = await start_server()
    await server.crm_control(fail=True)
    escalation, record, result = await escalate_call(
        server,
        JAMES,
        [
            # The caller lookup failed (1). Track an order (2), type its number, confirm it (1): that lookup fails
            # too (2) and the bot offers a callback; whatever the caller answers, the policy steps in first.
            Pause(1.0),
            PressDigits("2"),
            Pause(1.0),
            PressDigits("12345#"),
            Pause(0.5),
            PressDigits("1"),
            Pause(1.0),
            PressDigits("2"),
        ],
    )
    print(timeline(result))
    payload = _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "backend_failure", escalation
    assert "failed twice" in escalation["reason"].lower()
    assert 100 <= escalation["priority"] < 200  # unidentified callers rank as standard
    assert payload["customer_id"] is None  # the CRM never answered


async def test_frustrated_vip_goes_to_the_priority_queue_with_a_goodwill_offer(server_on_db, synth_phone):
    server = await server_on_db()
    escalation, record, result = await escalate_call(
        server,
        MARIA,
        [
            Pause(1.0),
            PlayAudio(
                synth_phone("This is unacceptable and ridiculous. Your service is useless and terrible. I am furious."),
                "angry vip",
            ),
        ],
    )
    print(timeline(result))
    payload = _check_common(escalation, record, MARIA)
    assert escalation["trigger"] == "vip_frustrated", escalation
    assert escalation["queue"] == "priority"
    assert escalation["priority"] >= 300  # the VIP band
    assert "7,240" in escalation["reason"]
    assert payload["customer_id"] == "C1001" and payload["lifetime_value"] > 5000
    assert payload["goodwill_offer"] and payload["goodwill_offer"]["text"]


async def test_choosing_a_person_from_the_menu_gives_the_agent_the_flows_reason(start_server):
    server = await start_server()
    escalation, record, _ = await escalate_call(server, JAMES, [Pause(1.0), PressDigits("0")])
    _check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "caller_request"
    assert "caller chose to speak to a person from the menu" in escalation["reason"].lower()  # the flow step's reason


async def test_one_shouted_turn_escalates_at_once(start_server, synth_phone):
    server = await start_server()
    loud = shout(synth_phone("Where is my order? I have been waiting for weeks."))
    caller = Caller(server.ws_url, from_number=JAMES)
    hold = escalated_and_on_hold(server, caller)
    await caller.run([Pause(1.0), PlayAudio(loud, "shouting"), Until(hold.condition, timeout_s=8, what=hold.what)])
    [escalation] = await escalations_of(server, caller.call_sid)
    assert escalation["trigger"] == "shouting"
