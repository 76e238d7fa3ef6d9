"""The agent desk page in Debian's chromium: log in, read a caller at a glance, accept, the call rings the agent's own
phone; a missed transfer comes back to the head of the queue on the page; a caller who hangs up is gone within 1 s.

`IVR_DESK_SCREENSHOT=docs/desk.png` also saves a screenshot of the desk (the one in the README)."""

from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from ivr.agent_desk import AgentDesk
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import (
    AGENT_NUMBER,
    PASSWORD,
    FakeClock,
    add_agent,
    handoff_payload,
    start_call,
    twilio_posts,
)
from tests.helpers.twilio_recorder import TwilioRecorder

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]

MARIA = {
    "customer_id": "C1001",
    "customer_name": "Maria Garcia",
    "caller_masked": "+1 ••• ••• 0100",
    "customer_tier": "vip",
    "lifetime_value": 7240.5,
    "intent_guess": "refund_request",
    "confidence": 0.64,
    "sentiment_trend": [0.2, -0.3, -0.7],
    "issue_history": [{"date": "2025-10-02", "type": "late_delivery", "resolved": False}],
    "conversation": [
        {"speaker": "caller", "text": "pressed 1"},
        {"speaker": "bot", "text": "Your order ORD-5521 is in transit, arriving Thursday."},
        {"speaker": "caller", "text": "This is the third time it is late, I want a refund now"},
        {"speaker": "bot", "text": "I understand. Let me get someone who can help."},
    ],
}


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def logged_in_page(browser: Any, client: TestClient, name: str) -> Any:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    await page.goto(str(client.make_url("/agent")))
    await page.fill("#login-name", name)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-form button")
    await page.locator("#conn.live").wait_for(timeout=10_000)
    await page.select_option("#status", "available")
    await page.locator("#status-reason").wait_for(state="attached")
    return page


async def escalate(desk: AgentDesk, storage: AsyncStorage, call_sid: str, reason: str, **payload: Any) -> int:
    await start_call(storage, call_sid)
    eid = await desk.enqueue(
        call_sid,
        trigger=str(payload.pop("trigger", "caller_request")),
        reason=reason,
        queue=str(payload.pop("queue", "delivery")),
        priority=int(payload.pop("priority", 60)),
        payload=handoff_payload(call_sid, reason=reason, **payload),
    )
    assert eid is not None
    return eid


async def test_agent_reads_the_caller_at_a_glance_accepts_and_a_missed_transfer_comes_back_to_the_head(
    client: TestClient,
    desk: AgentDesk,
    storage: AsyncStorage,
    twilio_recorder: TwilioRecorder,
    clock: FakeClock,
    browser: Any,
):
    call_sid = "CA" + "7" * 32
    reason = "Caller asked for a person after a third late delivery"
    await escalate(desk, storage, call_sid, reason, **MARIA)
    clock.advance(seconds=50)  # past half the 60 s SLA: amber
    await escalate(
        desk,
        storage,
        "CA" + "8" * 32,
        "Card payment failed twice",
        queue="billing",
        trigger="backend_failure",
        customer_name=None,
        customer_tier=None,
        customer_id=None,
        lifetime_value=None,
        issue_history=[],
        caller_masked="+1 ••• ••• 0199",
        intent_guess="payment_failed",
        confidence=0.81,
    )
    await add_agent(storage, "alice", AGENT_NUMBER, display_name="Alice Ng")
    await add_agent(storage, "bob", "sip:bob@pbx.example.test", display_name="Bob Ray")
    alice = await logged_in_page(browser, client, "alice")
    bob = await logged_in_page(browser, client, "bob")

    card = alice.locator("#queue article.card", has_text="Maria Garcia")
    await card.wait_for(timeout=10_000)
    text = await card.inner_text()
    for expected in (
        "Asked for a person",  # the trigger in words, never a code
        reason,
        "+1 ••• ••• 0100",
        "VIP",  # the tier badge
        "$7,240.50 lifetime",
        "Wants: refund request (64%)",
        "upset, getting worse",  # the sentiment trend is drawn, and read out in words
        "Caller: pressed 1",
        "Bot: Your order ORD-5521 is in transit",
        "late delivery",
        "Accept",
        "Decline",
    ):
        assert expected in text, expected
    assert "trigger:" not in text and "-0.7" not in text
    assert await card.locator("svg.trend polyline").count() == 1
    assert await card.locator("table.history tr").count() == 2
    assert "sla-warn" in (await card.get_attribute("class") or "")  # amber: past half the queue's SLA
    chip = alice.locator('#stats .stat[data-queue="delivery"]')
    assert "1 waiting · longest 0:50" in await chip.inner_text()
    assert "sla-warn" in (await chip.get_attribute("class") or "")

    await card.get_by_role("button", name="Accept").click()
    await twilio_recorder.wait_for(lambda reqs: any(r.path.endswith(f"Calls/{call_sid}.json") for r in reqs))
    mine = alice.locator("#mycall")
    await mine.get_by_text("Ringing your phone").wait_for(timeout=10_000)
    assert "Maria Garcia" in await mine.inner_text()  # the context stays on the page while it rings
    [req] = twilio_recorder.find(f"Calls/{call_sid}.json")
    assert ET.fromstring(req.form["Twiml"]).find("Dial/Number").text == AGENT_NUMBER
    await bob.locator("#queue article.card", has_text="Maria Garcia").wait_for(state="detached", timeout=10_000)

    leg = (ET.fromstring(req.form["Twiml"]).find("Dial").get("action") or "").split("?", 1)[1]
    await twilio_posts(
        client,
        f"/twilio/desk/dial-status?{leg}",
        {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer"},
    )
    for page in (alice, bob):
        await page.get_by_text("Alice Ng did not answer").wait_for(timeout=10_000)
        first = page.locator("#queue article.card").first
        await first.get_by_text("Back at the head").wait_for(timeout=10_000)
        assert "Maria Garcia" in await first.inner_text()
    assert await alice.locator("#status").input_value() == "away"
    assert "did not answer" in await alice.locator("#status-reason").inner_text()
    assert await alice.locator("#queue article.card").first.get_by_role("button", name="Accept").is_disabled()
    if os.environ.get("IVR_DESK_SCREENSHOT"):
        await bob.screenshot(path=os.environ["IVR_DESK_SCREENSHOT"], full_page=True)

    # A new caller: every page says so at once.
    await escalate(desk, storage, "CA" + "6" * 32, "Wants to cancel an order", customer_name="Priya Patel")
    for page in (alice, bob):
        await page.locator("#alerts li.new-caller", has_text="New caller in delivery: Priya Patel").wait_for(
            timeout=10_000
        )


async def test_a_caller_who_hangs_up_is_gone_from_the_desk_within_a_second(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, browser: Any
):
    call_sid = "CA" + "9" * 32
    await escalate(desk, storage, call_sid, "Caller asked for a person", **MARIA)
    await add_agent(storage, "alice", AGENT_NUMBER)
    page = await logged_in_page(browser, client, "alice")
    card = page.locator("#queue article.card", has_text="Maria Garcia")
    await card.wait_for(timeout=10_000)

    loop = asyncio.get_running_loop()
    hung_up = loop.time()
    desk.caller_left(call_sid)  # what the session does when the caller's stream ends
    await card.wait_for(state="detached", timeout=1_000)
    gone_after = loop.time() - hung_up
    print(f"hung-up caller gone from the desk after {1000 * gone_after:.0f} ms")  # shown with -s (README)
    assert gone_after < 1.0
    assert await page.locator("#empty").is_visible()
    record = await storage.get_escalation(1)
    assert record is not None and record["status"] == "abandoned"


async def test_the_agent_keeps_the_context_through_the_call_and_wraps_up_on_the_page(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder, browser: Any
):
    call_sid = "CA" + "5" * 32
    eid = await escalate(desk, storage, call_sid, "Caller asked for a person", **MARIA)
    await add_agent(storage, "alice", AGENT_NUMBER)
    page = await logged_in_page(browser, client, "alice")
    await page.locator("#queue article.card", has_text="Maria Garcia").get_by_role("button", name="Accept").click()
    mine = page.locator("#mycall")
    await mine.get_by_text("Ringing your phone").wait_for(timeout=10_000)
    await twilio_recorder.wait_for(lambda reqs: any(r.path.endswith(f"Calls/{call_sid}.json") for r in reqs))
    [req] = twilio_recorder.find(f"Calls/{call_sid}.json")
    leg = (ET.fromstring(req.form["Twiml"]).find("Dial").get("action") or "").split("?", 1)[1]
    await twilio_posts(client, f"/twilio/desk/whisper?{leg}", {"CallSid": "CA" + "4" * 32})
    await mine.get_by_text("Connected").wait_for(timeout=10_000)
    assert "Maria Garcia" in await mine.inner_text() and await page.locator("#status").input_value() == "busy"
    params = {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "completed", "DialCallDuration": "61"}
    await twilio_posts(client, f"/twilio/desk/dial-status?{leg}", params)
    await mine.get_by_text("Call ended: wrap up").wait_for(timeout=10_000)

    await page.select_option("#disposition", "resolved")
    await page.fill("#notes", "Refund approved for the late parcel.")
    await page.get_by_role("button", name="Save wrap-up").click()
    await mine.wait_for(state="hidden", timeout=10_000)  # saved: the call is off the agent's hands
    assert await page.locator("#status").input_value() == "available"
    [wrapped] = [a for a in await storage.list_audit() if a["action"] == "wrap_up"]
    assert wrapped["actor"] == "alice" and wrapped["details"]["disposition"] == "resolved"
    assert wrapped["subject"] == f"escalation:{eid}"
