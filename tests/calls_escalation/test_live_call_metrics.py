"""Containment, escalation rate and first response from real calls whose outcomes we counted by hand.

Four callers ring the live server at once: one is helped by the flow and says goodbye (resolved), one asks for a
person (escalated), one never speaks (silent), one speaks and then hangs up (abandoned). `ivr report --json`
and /metrics must tell exactly that story: a silent caller is not a resolved call.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from telephony.simcaller import Pause, PlayAudio, PressDigits, WaitForBot
from tests.calls_escalation.call_driver import (
    JAMES,
    MARIA,
    Caller,
    escalated_and_on_hold,
)

pytestmark = pytest.mark.slow

PRIYA = "+13125550103"
OTHER = "+14155550199"  # not a customer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_report_and_metrics_count_hand_counted_calls_honestly(server_on_db, synth_phone, monkeypatch, capsys):
    server = await server_on_db()
    resolved = Caller(server.ws_url, from_number=MARIA)
    escalated = Caller(server.ws_url, from_number=JAMES)
    silent = Caller(server.ws_url, from_number=OTHER)
    abandoned = Caller(server.ws_url, from_number=PRIYA)
    results = await asyncio.gather(
        # "your delivery" (1): the status is read out; nothing else (2): goodbye, and the bot hangs up.
        resolved.run([Pause(1.5), PressDigits("1"), Pause(5.0), PressDigits("2"), WaitForBot(timeout_s=20)]),
        escalated.run(
            [
                Pause(1.0),
                PlayAudio(synth_phone("I want to speak to a real person."), "ask for person"),
                escalated_and_on_hold(server, escalated),
            ]
        ),
        silent.run([Pause(2.0)]),
        abandoned.run([Pause(1.0), PlayAudio(synth_phone("I'd like to return something."), "returns"), Pause(2.5)]),
    )
    assert results[0].closed_by_server, "the resolved caller was not said goodbye to"
    outcomes = {}
    for caller in (resolved, escalated, silent, abandoned):
        record = await server.wait_call_closed(caller.call_sid)
        outcomes[caller.call_sid] = record["outcome"]
        assert record["first_response_ms"] is not None and record["first_response_ms"] > 0
    assert [outcomes[c.call_sid] for c in (resolved, escalated, silent, abandoned)] == [
        "resolved",
        "escalated",
        "silent",
        "abandoned",
    ]

    # ivr report --json, pointed at the server's database
    monkeypatch.setenv("IVR_DATABASE_URL", server.settings.resolved_database_url())
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
    assert (report["resolved"], report["escalated"], report["silent"], report["abandoned"], report["errors"]) == (
        1,
        1,
        1,
        1,
        0,
    )
    assert report["containment_rate"] == pytest.approx(0.25)
    assert report["escalation_rate"] == pytest.approx(0.25)
    assert report["escalations_by_reason"] == {"caller_request": 1}
    assert report["escalation_rate_by_reason"] == {"caller_request": pytest.approx(0.25)}
    assert report["first_response_ms_p50"] is not None and 0 < report["first_response_ms_p50"]
    assert report["first_response_ms_p95"] >= report["first_response_ms_p50"]
    assert report["cost_per_resolution"] == pytest.approx(report["cost_total"])  # one resolution pays for all
    assert report["agent_minutes"] > 0  # the escalated call's time on hold counts

    # /metrics: the live counters agree
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics") as resp:
        assert resp.status == 200
        samples = _samples(await resp.text())
    for outcome in ("resolved", "escalated", "silent", "abandoned"):
        assert samples[("ivr_calls_ended_total", (("outcome", outcome),))] == 1, outcome
    assert ("ivr_calls_ended_total", (("outcome", "error"),)) not in samples
    assert samples[("ivr_escalations_total", (("trigger", "caller_request"),))] == 1
    assert samples[("ivr_calls_total", ())] == 4
    assert samples[("ivr_first_greeting_seconds_count", ())] == 4
    assert samples[("ivr_active_calls", ())] == 0
