"""The report against hand-counted calls written through Storage, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from escalation_script import SHOUTING_SPL_DB, ScriptedCall, james
from prometheus_client.parser import text_string_to_metric_families

from ivr.escalation import EscalationConfig, EscalationPolicy
from ivr.handoff import build_handoff
from ivr.report import CostConfig, build_report, export_retraining_dataset, report_prometheus_lines

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
COSTS = CostConfig(ai_cost_per_minute=0.10, agent_cost_per_minute=1.00)


def record_call(storage, sid, *, start, outcome, minutes, first_response_ms=None, escalation=None, said=()):
    """Writes a call as the session would; `escalation` = (trigger, minutes into the call, status)."""
    storage.start_call(sid, stream_sid=f"MZ{sid}", caller="+14155550101", params={}, region="us_west", started_at=start)
    if first_response_ms is not None:
        storage.update_call(sid, first_response_ms=first_response_ms)
    for i, (text, intent, conf) in enumerate(said):
        storage.add_turn(sid, idx=i, at=start + timedelta(seconds=10 * (i + 1)), channel="voice", text=text,
                         intent=intent, confidence=conf)  # fmt: skip
    if escalation:
        trigger, after, status = escalation
        payload = {"intent_guess": said[-1][1] if said else None}
        esc_id = storage.add_escalation(
            sid, trigger=trigger, reason=trigger, queue="general", priority=100, payload=payload
        )
        storage.update_escalation(esc_id, at=start + timedelta(minutes=after), status=status)
    if outcome != "in_progress":
        storage.end_call(sid, reason="hangup", outcome=outcome, ended_at=start + timedelta(minutes=minutes))


@pytest.fixture
def ten_calls(storage):
    rows = [
        # sid, outcome, minutes, first response ms, escalation
        ("R1", "resolved", 2, 400, None),
        ("R2", "resolved", 3, 500, None),
        ("R3", "resolved", 4, 600, None),
        ("R4", "resolved", 5, 700, None),
        ("E1", "escalated", 5, 800, ("negative_phrases", 1, "transferred")),
        ("E2", "escalated", 8, 900, ("negative_phrases", 2, "transferred")),
        ("E3", "escalated", 13, 1000, ("legal", 3, "transferred")),
        ("S1", "silent", 1, 1100, None),
        ("S2", "silent", 1, 1200, None),
        ("A1", "abandoned", 0.5, 1300, None),
        ("P1", "in_progress", 0, None, None),  # still live: counted as a call, never as an outcome
    ]
    for i, (sid, outcome, minutes, frt, esc) in enumerate(rows):
        record_call(storage, sid, start=T0 + timedelta(minutes=15 * i), outcome=outcome, minutes=minutes,
                    first_response_ms=frt, escalation=esc)  # fmt: skip
    return storage


def test_report_counts_hand_checked_calls(ten_calls):
    report = build_report(ten_calls, COSTS, now=T0 + timedelta(days=1))
    assert (report.calls, report.ended) == (11, 10)
    assert (report.resolved, report.escalated, report.silent, report.abandoned) == (4, 3, 2, 1)
    # silent and abandoned calls count against containment, never for it
    assert report.containment_rate == 0.4
    assert report.escalation_rate == 0.3
    assert report.escalations_by_reason == {"negative_phrases": 2, "legal": 1}
    assert report.escalation_rate_by_reason == {"negative_phrases": 0.2, "legal": 0.1}
    # AI minutes: resolved 2+3+4+5, escalated calls until escalation 1+2+3, silent 1+1, abandoned 0.5 = 22.5
    # agent minutes: after escalation 4+6+10 = 20
    assert report.ai_minutes == pytest.approx(22.5)
    assert report.agent_minutes == pytest.approx(20.0)
    assert report.cost_total == pytest.approx(22.5 * 0.10 + 20 * 1.00)
    assert report.cost_per_resolution == pytest.approx((2.25 + 20.0) / 4)
    # first response 400..1300 ms: median between 800 and 900; p95 at rank 8.55 between 1200 and 1300
    assert report.first_response_ms_p50 == pytest.approx(850.0)
    assert report.first_response_ms_p95 == pytest.approx(1255.0)


def test_report_since_only_counts_later_calls(ten_calls):
    report = build_report(ten_calls, COSTS, since=T0 + timedelta(minutes=15 * 7), now=T0 + timedelta(days=1))
    assert (report.ended, report.silent, report.abandoned, report.resolved) == (3, 2, 1, 0)
    assert report.containment_rate == 0.0 and report.cost_per_resolution is None


def test_report_counts_the_turns_callers_were_cut_off_in(ten_calls):
    # R1: three turns, the second ended on its words and the caller went on; E1: two turns, one cut by silence and
    # the caller went on; R2: one turn. The events are what ivr/listening.py records.
    for sid, reasons, resumed in (("R1", ["silence", "turn_end", "silence"], ["words"]),
                                  ("E1", ["silence", "silence"], ["silence"]), ("R2", ["silence"], [])):  # fmt: skip
        for reason in reasons:
            ten_calls.add_event(sid, "utterance", {"duration_s": 1.2, "reason": reason})
        for by in resumed:
            ten_calls.add_event(sid, "turn_resumed", {"by": by, "after_ms": 180})
    ten_calls.add_event("R1", "barge_in", {})  # other events are not turns

    report = build_report(ten_calls, COSTS, now=T0 + timedelta(days=1))
    assert report.caller_turns == 6
    assert report.cut_off_turns == {"words": 1, "silence": 1}
    assert report.cut_off_rate == pytest.approx(2 / 6)
    # R1, R2 and E1 started before this: their turns are not in a report since then
    later = build_report(ten_calls, COSTS, since=T0 + timedelta(minutes=15 * 7), now=T0 + timedelta(days=1))
    assert (later.caller_turns, later.cut_off_turns, later.cut_off_rate) == (0, {}, None)


def test_report_as_prometheus_text(ten_calls):
    report = build_report(ten_calls, COSTS, now=T0 + timedelta(days=1))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(report_prometheus_lines(report))
        for s in family.samples
    }
    assert samples[("ivr_report_containment_ratio", ())] == 0.4
    assert samples[("ivr_report_cost_per_resolution", ())] == pytest.approx(report.cost_per_resolution)
    assert samples[("ivr_report_escalation_by_trigger_ratio", (("trigger", "legal"),))] == 0.1
    assert samples[("ivr_report_first_response_ms", (("quantile", "0.95"),))] == pytest.approx(1255.0)
    assert samples[("ivr_report_retraining_due", ())] == 0.0


def unclear_call(storage, sid, when, text):
    """A real unclear call: two low-confidence turns, escalated by the policy, payload from build_handoff."""
    call = ScriptedCall(sid, customer=james())
    call.caller(text, intent="billing_problem", confidence=0.4)
    call.bot_asks_again()
    call.caller("you know, the thing", intent="billing_problem", confidence=0.45)
    policy = EscalationPolicy(EscalationConfig(), shouting_spl_db=SHOUTING_SPL_DB, clock=lambda: when)
    decision = policy.evaluate(call.ctx)
    assert decision.trigger == "low_confidence"
    payload = build_handoff(call.ctx, decision, transcript_url=f"/calls/{sid}", now=when).model_dump(mode="json")
    storage.start_call(sid, stream_sid=None, caller=None, params={}, started_at=when - timedelta(minutes=2))
    for t in call.ctx.turns:
        storage.add_turn(sid, idx=t.index, channel=t.channel, text=t.text, intent=t.intent, confidence=t.confidence)
    esc_id = storage.add_escalation(sid, trigger=decision.trigger, reason=decision.reason, queue=decision.queue,
                                    priority=decision.priority, payload=payload)  # fmt: skip
    storage.update_escalation(esc_id, at=when)
    storage.end_call(sid, reason="transferred", outcome="escalated", ended_at=when + timedelta(minutes=3))


def test_retraining_signal_fires_at_threshold_and_export_holds_those_calls(storage, tmp_path):
    now = T0 + timedelta(days=30)
    unclear_call(storage, "OLD", now - timedelta(days=8), "something about an old charge")  # outside the week
    record_call(storage, "NEG", start=now - timedelta(days=1), outcome="escalated", minutes=4,
                escalation=("negative_phrases", 1, "transferred"), said=[("awful", "billing_problem", 0.9)])  # fmt: skip
    for i in range(4):
        unclear_call(storage, f"U{i}", now - timedelta(days=i + 1), f"it's about the thing number {i}")
    report = build_report(storage, COSTS, unclear_intent_threshold=5, now=now)
    assert report.unclear_escalations_7d == 4 and not report.retraining_due

    unclear_call(storage, "U4", now - timedelta(hours=1), "my card is 4111 1111 1111 1111 the charge on it")
    report = build_report(storage, COSTS, unclear_intent_threshold=5, now=now)
    assert report.unclear_escalations_7d == 5 and report.retraining_due
    assert report.retraining == [{"intent_guess": "billing_problem", "count": 5, "threshold": 5, "exceeded": True}]

    out = tmp_path / "retrain" / "unclear.jsonl"
    assert export_retraining_dataset(storage, out, now=now) == 5
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["call_sid"] for r in lines) == ["U0", "U1", "U2", "U3", "U4"]
    by_sid = {r["call_sid"]: r for r in lines}
    assert [t["text"] for t in by_sid["U2"]["turns"]] == ["it's about the thing number 2", "you know, the thing"]
    assert by_sid["U2"]["intent_guess"] == "billing_problem"
    assert "4111" not in out.read_text(encoding="utf-8")
    assert by_sid["U4"]["turns"][0]["text"] == "my card is [card number removed] the charge on it"


def test_hold_time_is_not_agent_time_and_callers_who_hang_up_on_hold_are_abandoned(storage):
    """Two escalated callers: one held 10 minutes then hung up (never reached an agent); one held 7 minutes,
    then an agent talked 2 minutes and wrapped up in 30 s as resolved."""
    from ivr import agents as ag

    record_call(storage, "GONE", start=T0, outcome="escalated", minutes=11, escalation=("caller_request", 1, "waiting"))
    assert ag.abandon_waiting(storage, "GONE")
    record_call(storage, "HELD", start=T0, outcome="escalated", minutes=10, escalation=("legal", 1, "transferred"))
    [esc] = [e for e in storage.list_escalations() if e["call_sid"] == "HELD"]
    leg = ag.add_leg(storage, esc["id"], "HELD", "alice", "+14155550111", now=T0 + timedelta(minutes=8))
    ag.update_leg(
        storage,
        leg,
        status="completed",
        answered_at=T0 + timedelta(minutes=8),
        ended_at=T0 + timedelta(minutes=10),
        talk_s=120.0,
        wrapped_at=T0 + timedelta(minutes=10, seconds=30),
        disposition="resolved",
    )

    report = build_report(storage, COSTS, now=T0 + timedelta(hours=1))
    assert (report.abandoned, report.abandoned_in_queue, report.escalated) == (1, 1, 1)
    assert report.agent_minutes == pytest.approx(2.5)  # talk + wrap-up; 7 + 10 minutes on hold are not in it
    assert report.escalation_rate == pytest.approx(1.0)  # both were handed to the desk
    assert report.resolved_by_agent == 1
    assert report.cost_per_resolution == pytest.approx(report.cost_total / 1)
