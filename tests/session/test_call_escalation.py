"""Whole calls on virtual time until each escalation trigger fires: what is stored for the agent, what the
caller hears (the hold line, then where they stand and the callback offer at the queue's interval, whether or
not they speak), the SMS callback link only when taken or after the overflow wait, a transfer, and the report
and metrics over calls whose outcomes we know."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from ivr import agents as ag
from ivr.prompts import CALLBACK_OFFER, CALLBACK_OVERFLOW, CALLBACK_TAKEN, HOLD_LINE, NEXT_IN_LINE, queue_position
from tests.helpers.leaks import without_times
from tests.helpers.virtual_call import JAMES, MARIA, PRIYA, UNKNOWN, Harness, VirtualCall

pytestmark = pytest.mark.looptime

BOB = "+14155550142"  # the agent's own phone
NOW = datetime(2025, 11, 24, 12, 0, tzinfo=UTC)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "handoff.schema.json"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str | None:
    """Storage on the SQLite file of each harness, or on an emptied PostgreSQL database."""
    return request.getfixturevalue("pg_url") if request.param == "postgres" else None


def escalations_of(h: Harness, call: VirtualCall) -> list[dict[str, Any]]:
    return [e for e in h.services.db.sync.list_escalations() if e["call_sid"] == call.call_sid]


async def until_on_hold(h: Harness, call: VirtualCall) -> None:
    """Until the escalation is stored and the caller has heard the start of the hold line."""
    await call.wait_for(
        lambda: bool(escalations_of(h, call)) and HOLD_LINE in call.heard_text(), what="escalation and hold line"
    )


async def escalate(h: Harness, caller: str, *steps: Any) -> tuple[dict, dict, VirtualCall]:
    """Greeting, then each step (text: said; "k:digits": pressed; a number: a pause), then on hold; hangs up."""
    call = await h.call(caller).start()
    await call.wait(1.0)
    for step in steps:
        if isinstance(step, (int, float)):
            await call.wait(step)
        elif step.startswith("k:"):
            await call.press(step[2:])
        else:
            await call.say(step, loud=step.isupper())
            if step is not steps[-1]:
                await call.wait_for_bot()
    await until_on_hold(h, call)
    record = await call.finish()
    (escalation,) = escalations_of(h, call)
    return escalation, record, call


def check_common(escalation: dict, record: dict, from_number: str) -> dict:
    """What every escalation carries: a valid handoff matching its row, and an escalated call record."""
    import jsonschema

    payload = escalation["payload"]
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))).validate(payload)
    assert payload["call_sid"] == escalation["call_sid"] == record["call_sid"]
    for key in ("trigger", "reason", "queue", "priority"):
        assert payload[key] == escalation[key]
    # The caller hung up while on hold: out of the agents' queue at once, counted as abandoned.
    assert escalation["status"] == "abandoned"
    assert record["outcome"] == "escalated" and record["caller"] == from_number
    assert payload["transcript_url"].endswith(f"/api/calls/{record['call_sid']}")
    assert [e["data"]["trigger"] for e in record["events"] if e["kind"] == "escalation"] == [escalation["trigger"]]
    return payload


async def test_caller_asking_for_a_person_is_escalated_hears_the_offer_and_is_not_texted_unasked(make_harness, db_url):
    h = await make_harness(database_url=db_url)
    escalation, record, call = await escalate(h, JAMES, "I want to speak to a real person.")
    payload = check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "caller_request"
    assert "person" in escalation["reason"].lower()
    assert escalation["queue"] == h.services.flow.queue  # no topic yet: the line's own queue
    assert 100 <= escalation["priority"] < 200  # a standard-tier customer
    assert payload["customer_id"] == "C1002"
    assert any("person" in m.lower() for m in payload["last_3_messages"])
    assert h.metric("ivr_escalations_total", {"trigger": "caller_request"}) == 1
    assert h.twilio.sms == [] and await h.services.db.list_callbacks() == []  # nobody asked for a text
    # The record says what the caller was told in answer: the hold line, not nothing.
    asked = record["turns"][-1]
    assert "person" in asked["text"] and asked["reply"].startswith(HOLD_LINE)
    # ... and how long they waited for it, as for any other turn: the hold line's first frame ends the turn.
    latency = asked["latency"]
    assert latency["total"] >= h.settings.audio.endpoint_silence_ms
    assert latency["total"] == pytest.approx(
        latency["endpoint_wait"] + latency["asr"] + latency["understanding"] + latency["tts_first_frame"], abs=2
    )


async def test_legal_words_escalate_at_once_naming_the_words_and_reach_the_agent(make_harness, db_url):
    h = await make_harness(database_url=db_url)
    escalation, record, _ = await escalate(h, JAMES, "I'll get my lawyer and take you to court.")
    payload = check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "legal"
    assert "'lawyer'" in escalation["reason"] and "'take you to court'" in escalation["reason"]
    assert escalation["queue"] == h.services.flow.queue and 100 <= escalation["priority"] < 200
    assert payload["goodwill_offer"] is None  # a legal dispute never gets an improvised offer
    # The words that triggered the policy are a turn of the call and reach the agent.
    assert any("lawyer" in t["text"].lower() for t in record["turns"])
    assert any("lawyer" in m.lower() for m in payload["last_3_messages"])


async def test_three_negative_phrases_over_two_turns_escalate(make_harness):
    h = await make_harness()
    escalation, record, _ = await escalate(
        h, JAMES, "This is unacceptable. It's ridiculous.", "Your service is useless."
    )
    check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "negative_phrases"
    for word in ("unacceptable", "ridiculous", "useless"):
        assert f"'{word}'" in escalation["reason"]


async def test_one_shouted_turn_escalates_at_once_with_the_measured_level(make_harness):
    h = await make_harness()
    escalation, record, _ = await escalate(h, JAMES, "WHERE IS MY ORDER? I HAVE BEEN WAITING FOR WEEKS.")
    check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "shouting"
    assert "shouting" in escalation["reason"].lower() and "dB SPL" in escalation["reason"]
    assert escalation["queue"] == "delivery"  # "where is my order": the delivery team
    levels = [t["loudness_spl_db"] for t in record["turns"] if t["loudness_spl_db"] is not None]
    assert levels and max(levels) > h.settings.audio.shouting_spl_db


async def test_the_same_words_at_a_normal_level_are_not_shouting(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait(1.0)
    await call.say("Where is my order? I have been waiting for weeks.")
    await call.wait_for_bot()
    record = await call.finish()
    assert record["escalations"] == []
    assert record["turns"][0]["loudness_spl_db"] < h.settings.audio.shouting_spl_db


async def test_still_unclear_after_one_clarification_escalates_for_low_confidence(make_harness):
    h = await make_harness()
    escalation, record, _ = await escalate(
        h, JAMES, "Purple elephants juggle the moon.", "Banana telephone on a Tuesday."
    )
    payload = check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "low_confidence"
    assert "clarif" in escalation["reason"].lower()
    assert payload["confidence"] is None or payload["confidence"] < h.services.answer_threshold


async def test_repeated_backend_failures_escalate(make_harness):
    h = await make_harness()
    h.crm.control(fail=True)
    # The caller lookup fails (1). Track an order (2), type its number, confirm it (1): that lookup fails too (2)
    # and the bot offers a callback; whatever the caller answers, the policy steps in first.
    escalation, record, _ = await escalate(h, JAMES, "k:2", 1.0, "k:12345#", 0.5, "k:1", 1.0, "k:2")
    payload = check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "backend_failure"
    assert "failed twice" in escalation["reason"].lower()
    assert 100 <= escalation["priority"] < 200  # unidentified callers rank as standard
    assert payload["customer_id"] is None  # the CRM never answered


async def test_frustrated_vip_goes_to_the_priority_queue_with_a_goodwill_offer(make_harness, db_url):
    h = await make_harness(database_url=db_url)
    escalation, record, _ = await escalate(
        h, MARIA, "This is unacceptable and ridiculous. Your service is useless and terrible. I am furious."
    )
    payload = check_common(escalation, record, MARIA)
    assert escalation["trigger"] == "vip_frustrated"
    assert escalation["queue"] == "priority"
    assert escalation["priority"] >= 300  # the VIP band
    assert "7,240" in escalation["reason"]
    assert payload["customer_id"] == "C1001" and payload["lifetime_value"] > 5000
    assert payload["goodwill_offer"] and payload["goodwill_offer"]["text"]


async def test_choosing_a_person_from_the_menu_gives_the_agent_the_flows_reason(make_harness):
    h = await make_harness()
    escalation, record, _ = await escalate(h, JAMES, "k:0")
    check_common(escalation, record, JAMES)
    assert escalation["trigger"] == "caller_request"
    assert "caller chose to speak to a person from the menu" in escalation["reason"].lower()
    pressed = record["turns"][-1]
    assert pressed["channel"] == "dtmf" and HOLD_LINE in pressed["reply"]


async def test_flow_handover_for_an_unknown_caller_tells_the_agent_why_in_the_flows_queue(make_harness):
    h = await make_harness(flow="banking")
    escalation, record, call = await escalate(h, UNKNOWN, "k:1")
    assert record["turns"][0]["reply"].startswith("I couldn't find an account for this number")
    assert HOLD_LINE in record["turns"][0]["reply"]  # the flow's words, then the hold line
    assert "no account found for the caller's number" in escalation["reason"].lower()
    assert escalation["queue"] == "banking"


async def test_three_wrong_pins_lock_out_and_hand_over_unverified_with_no_pin_kept(make_harness, caplog):
    caplog.set_level(logging.DEBUG)
    h = await make_harness(flow="banking")
    escalation, record, call = await escalate(h, MARIA, "k:2", 4, "k:1111#", 3, "k:9999#", 3, "k:4321#")
    payload = check_common(escalation, record, MARIA)
    assert (escalation["trigger"], escalation["reason"], escalation["queue"]) == (
        "verification_failed",
        "verification failed",
        "banking",
    )
    assert (payload["caller_verified"], payload["verification_method"], payload["verification_locked"]) == (
        False,
        None,
        True,
    )
    assert [(e["outcome"], e["method"]) for e in call.events(record, "verification")] == [
        ("failed", "pin"),
        ("failed", "pin"),
        ("failed", "pin"),
        ("locked", "pin"),
    ]
    assert "couldn't verify you" in call.heard_text() and "balance is" not in call.heard_text()
    assert not [r for r in h.crm.journal if r["path"].endswith("/balance")]  # never read
    # What the log lines say (not their timestamps or line numbers, where four digits can turn up by chance).
    kept = json.dumps([record, escalation, list(h.crm.journal)]) + "\n".join(r.getMessage() for r in caplog.records)
    for pin in ("1111", "9999", "4321"):
        assert pin not in without_times(kept)


async def test_a_verified_caller_hears_the_balance_and_the_agent_is_told_how_they_were_verified(make_harness):
    h = await make_harness(flow="banking")
    escalation, record, call = await escalate(h, MARIA, "k:2", 4, "k:2580#", 6, "I want to speak to a real person.")
    payload = check_common(escalation, record, MARIA)
    assert "Your available balance is, 182.4 USD" in call.heard_text()
    assert (payload["caller_verified"], payload["verification_method"], payload["verification_locked"]) == (
        True,
        "pin",
        False,
    )
    assert [e["outcome"] for e in call.events(record, "verification")] == ["verified"]
    assert "2580" not in without_times(json.dumps([record, escalation, list(h.crm.journal)]))


async def _on_hold(h: Harness, caller: str = JAMES) -> tuple[VirtualCall, float]:
    """A caller asks for a person; returns once they are on hold, with the loop time the escalation happened."""
    call = await h.call(caller).start()
    await call.wait(1.0)
    await call.say("I want to speak to a real person.")
    await until_on_hold(h, call)
    on_hold_at = next(s.start_t for s in call.speech() if s.text == HOLD_LINE)
    return call, on_hold_at


def _said(call: VirtualCall, text: str) -> list[float]:
    """When each saying of `text` started (loop time)."""
    return [s.start_t for s in call.speech() if s.text == text and s.first_index == 0]


async def test_on_hold_a_silent_caller_hears_their_place_and_the_offer_every_interval(make_harness):
    h = await make_harness()
    every = h.settings.queue_hours.default.hold_announce_every_s
    call, on_hold_at = await _on_hold(h)
    await call.wait(3.2 * every)  # the caller says nothing at all
    record = await call.finish()

    positions = _said(call, NEXT_IN_LINE)
    assert len(positions) == 3, call.describe()
    assert [round(b - a, 1) for a, b in pairwise(positions)] == [every, every]
    assert positions[0] - on_hold_at == pytest.approx(every, abs=0.5)
    offers = _said(call, CALLBACK_OFFER)
    assert len(offers) == 4  # once with the hold line, then after every announcement
    assert all(any(0 < o - p < 5 for o in offers) for p in positions)
    assert [e["position"] for e in call.events(record, "hold_announcement")] == [1, 1, 1]
    assert h.twilio.sms == []  # not past the overflow wait yet


async def test_the_second_caller_in_a_queue_hears_they_are_number_two(make_harness):
    h = await make_harness()
    first, _ = await _on_hold(h, MARIA)
    second, _ = await _on_hold(h, JAMES)
    await second.wait(h.settings.queue_hours.default.hold_announce_every_s + 5)
    assert _said(second, queue_position(2)), second.describe()
    assert _said(first, NEXT_IN_LINE) and not _said(first, queue_position(2))


async def test_a_caller_who_waits_past_the_overflow_wait_is_texted_once_and_stays_in_the_queue(make_harness):
    h = await make_harness()
    hours = h.settings.queue_hours.default
    call, on_hold_at = await _on_hold(h)
    await call.wait(hours.offer_callback_after_s - 5)
    assert h.twilio.sms == []
    await call.wait(3 * hours.hold_announce_every_s)

    (sms,) = h.twilio.sms  # once, however long they wait
    assert sms["to"] == JAMES and sms["body"].startswith(f"{h.settings.callbacks.company_name}:")
    assert "sorry for the wait" in sms["body"].lower() and "Reply STOP" in sms["body"]
    (overflow,) = _said(call, CALLBACK_OVERFLOW)
    assert overflow - on_hold_at >= hours.offer_callback_after_s
    (escalation,) = escalations_of(h, call)
    assert escalation["status"] == "waiting"  # texted, not booked: they keep their place
    record = await call.finish()
    assert record["outcome"] == "escalated"


async def test_a_caller_who_books_from_the_link_while_holding_hears_the_time_and_is_let_go(make_harness):
    h = await make_harness()
    hours = h.settings.queue_hours.default
    call, _ = await _on_hold(h)
    await call.wait(hours.offer_callback_after_s + hours.hold_announce_every_s)
    assert len(h.twilio.sms) == 1 and h.services.callbacks is not None
    (row,) = await h.services.db.list_callbacks()
    booked = await h.services.callbacks.schedule(row["token"], h.services.callbacks.slots(row)[0])
    words = h.services.callbacks.when_words(booked)
    assert words is not None and words.endswith("Pacific time")  # a 415 number

    await call.wait_for(lambda: call.session.ended.is_set(), timeout_s=hours.hold_announce_every_s + 30)
    assert f"your callback is booked for {words}".lower() in call.heard_text().lower()
    (escalation,) = escalations_of(h, call)
    assert escalation["status"] == "callback"
    record = await call.finish()
    assert record["outcome"] == "callback" and record["end_reason"] == "callback_booked"


async def test_pressing_1_on_hold_texts_the_link_takes_the_caller_out_of_the_queue_and_says_goodbye(make_harness):
    h = await make_harness()
    call, _ = await _on_hold(h)
    await call.wait_for(lambda: bool(_said(call, CALLBACK_OFFER)), what="the offer")
    await call.press("1")
    await call.wait_for(lambda: call.session.ended.is_set(), what="the goodbye and hang-up")

    (sms,) = h.twilio.sms
    (callback,) = await h.services.db.list_callbacks()
    assert sms["to"] == JAMES and callback["token"] in sms["body"] and callback["status"] == "sent"
    assert "you asked us to call you back" in sms["body"]
    assert CALLBACK_TAKEN in call.heard_text()
    (escalation,) = escalations_of(h, call)
    assert escalation["status"] == "callback"
    assert h.services.desk is not None
    assert [i for i in (await h.services.desk.snapshot())["items"] if i["call_sid"] == call.call_sid] == []
    record = await call.finish()
    assert record["outcome"] == "callback" and record["end_reason"] == "callback_requested"


async def test_stop_after_a_transfer_ends_the_stream_as_a_transfer_not_a_hang_up(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait(1.0)
    await call.say("I want to speak to a real person.")
    await until_on_hold(h, call)
    (row,) = escalations_of(h, call)
    assert h.services.desk is not None
    db = h.services.db
    await db.run(
        ag.add_agent, db.sync, "bob", display_name="Bob", reach=ag.Reach.parse(BOB), password="x" * 12, now=NOW
    )
    await db.run(ag.set_status, db.sync, "bob", "available", now=NOW)
    await h.services.desk.accept(row["id"], "bob")
    record = await call.finish()  # Twilio ends the media stream with `stop` once the call is redirected

    [transfer] = h.twilio.transfers
    assert transfer["call_sid"] == call.call_sid and transfer["to"] == BOB  # bob's own phone, not a shared line
    assert record["end_reason"] == "transferred_to_agent" and record["outcome"] == "escalated"
    assert [e["status"] for e in record["escalations"]] == ["transferred"]
    assert call.call_sid in h.services.contexts  # kept for a transfer back


async def test_report_and_metrics_count_hand_counted_calls_honestly(make_harness, db_url, monkeypatch, capsys):
    h = await make_harness(database_url=db_url)
    resolved, escalated, silent, abandoned = (h.call(n) for n in (MARIA, JAMES, UNKNOWN, PRIYA))
    for call in (resolved, escalated, silent, abandoned):
        await call.start()

    async def resolve() -> None:
        # Her delivery (1): the status is read out; nothing else (2): goodbye, and the bot hangs up.
        await resolved.wait(1.5)
        await resolved.press("1")
        await resolved.wait_for(lambda: "anything else" in resolved.heard_text(), what="anything else")
        await resolved.press("2")
        await resolved.wait_for(lambda: resolved.session.ended.is_set(), what="the bot to hang up")

    async def ask_for_a_person() -> None:
        await escalated.wait(1.0)
        await escalated.say("I want to speak to a real person.")
        await until_on_hold(h, escalated)

    async def speak_then_hang_up() -> None:
        await abandoned.wait(1.0)
        await abandoned.say("I'd like to return something.")
        await abandoned.wait(2.5)

    await asyncio.gather(resolve(), ask_for_a_person(), speak_then_hang_up(), silent.wait(2.0))
    records = [await c.finish() for c in (resolved, escalated, silent, abandoned)]
    assert [r["outcome"] for r in records] == ["resolved", "escalated", "silent", "abandoned"]
    assert records[0]["end_reason"].startswith("bot_hangup")
    assert all(r["first_response_ms"] is not None and r["first_response_ms"] >= 0 for r in records)

    # ivr report --json, pointed at the same database
    monkeypatch.setenv("IVR_DATABASE_URL", db_url or f"sqlite:///{h.settings.data_dir / 'ivr.sqlite3'}")
    monkeypatch.delenv("IVR_CONFIG_FILE", raising=False)
    from ivr.cli import main

    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["report", "--json"]) == 0
    finally:  # the CLI installs its own log handler on the captured stderr: later tests must not log into it
        root.handlers[:], root.level = handlers, level
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == report["ended"] == 4
    counts = (report["resolved"], report["escalated"], report["silent"], report["abandoned"], report["errors"])
    # James hung up on hold before any agent answered: abandoned (in the queue), not handled by the desk.
    assert counts == (1, 0, 1, 2, 0) and report["abandoned_in_queue"] == 1
    assert report["agent_minutes"] == 0.0  # his time on hold is not agent time
    assert report["containment_rate"] == pytest.approx(0.25)
    assert report["escalation_rate"] == pytest.approx(0.25)
    assert report["escalations_by_reason"] == {"caller_request": 1}
    assert report["escalation_rate_by_reason"] == {"caller_request": pytest.approx(0.25)}
    assert report["first_response_ms_p50"] is not None
    assert report["first_response_ms_p95"] >= report["first_response_ms_p50"]
    assert report["cost_per_resolution"] == pytest.approx(report["cost_total"])  # one resolution pays for all

    # The live counters agree.
    for outcome in ("resolved", "escalated", "silent", "abandoned"):
        assert h.metric("ivr_calls_ended_total", {"outcome": outcome}) == 1, outcome
    assert h.metric("ivr_calls_ended_total", {"outcome": "error"}) == 0
    assert h.metric("ivr_escalations_total", {"trigger": "caller_request"}) == 1
    assert h.metric("ivr_calls_total") == 4
    assert h.metric("ivr_first_greeting_seconds_count") == 4
    assert h.metric("ivr_active_calls") == 0
