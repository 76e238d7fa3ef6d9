"""The real-model tier of escalation: after a live escalation the agent page shows it and Accept transfers the call
through Twilio (what the caller is texted, and every trigger, are tested on virtual time in tests/session/).

The Twilio REST API is the local recorder (tests/helpers/twilio_recorder.py): it records what the real `twilio`
library sends. When Twilio redirects a call to <Dial>, the media stream ends with `stop`; the simulated caller
sends exactly that once the transfer has happened.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import aiohttp
import pytest

from ivr import agents as ag
from ivr.storage import utcnow
from telephony.simcaller import Pause, PlayAudio
from tests.calls_escalation.call_driver import (
    JAMES,
    Caller,
    Until,
    escalated_and_on_hold,
    escalations_of,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ALICE_REACH, PASSWORD = "+14155550111", "alice-desk-password"


async def agent_alice(server) -> None:
    """An agent account, as `ivr agents add` makes it."""
    db = server.services.db
    await db.run(
        ag.add_agent,
        db.sync,
        "alice",
        display_name="Alice",
        reach=ag.Reach.parse(ALICE_REACH),
        password=PASSWORD,
        now=utcnow(),
    )


def _transferred(server, call_sid: str) -> Until:
    async def done() -> bool:
        return any(e["status"] == "transferred" for e in await escalations_of(server, call_sid))

    return Until(done, timeout_s=40, what="the agent's transfer")


def _check_transfer(server, call_sid: str) -> None:
    [req] = server.recorder.find(f"Calls/{call_sid}.json")
    assert req.method == "POST" and req.status == 200
    dial = ET.fromstring(req.form["Twiml"]).find("Dial/Number")
    assert dial is not None and dial.text == ALICE_REACH  # the accepting agent's own phone


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
async def test_agent_page_shows_the_live_escalation_and_accept_transfers_the_call(start_server, synth_phone):
    import asyncio

    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    server = await start_server()
    await agent_alice(server)
    caller = Caller(server.ws_url, from_number=JAMES)
    call = asyncio.create_task(
        caller.run(
            [
                Pause(1.0),
                PlayAudio(synth_phone("I want to speak to a real person."), "ask for person"),
                escalated_and_on_hold(server, caller),
                _transferred(server, caller.call_sid),
            ]
        )
    )
    try:
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{server.base_url}/agent")
                await page.fill("#login-name", "alice")
                await page.fill("#login-password", PASSWORD)
                await page.click("#login-form button")
                await page.locator("#conn.live").wait_for(timeout=10_000)
                await page.select_option("#status", "available")
                card = page.locator("#queue article.card", has_text="person")
                await card.wait_for(timeout=20_000)  # pushed over the WebSocket when the call escalates
                [escalation] = await escalations_of(server, caller.call_sid)
                text = await card.inner_text()
                assert escalation["reason"] in text and escalation["payload"]["customer_name"] in text
                await card.get_by_role("button", name="Accept").click(timeout=10_000)
                mine = page.locator("#mycall")
                await mine.get_by_text("Ringing your phone").wait_for(timeout=10_000)
                assert escalation["payload"]["customer_name"] in await mine.inner_text()
            finally:
                await browser.close()
        await asyncio.wait_for(call, 45)
    finally:
        call.cancel()
    _check_transfer(server, caller.call_sid)
    record = await server.wait_call_closed(caller.call_sid)
    # The stream's `stop` after the transfer ends our part of the call; the call itself was escalated.
    assert record["outcome"] == "escalated"
    assert [e["status"] for e in record["escalations"]] == ["transferred"]
    assert caller.call_sid in server.services.contexts  # kept for a transfer back


async def test_stop_after_a_transfer_is_not_recorded_as_the_caller_hanging_up(start_server, synth_phone):
    server = await start_server()
    await agent_alice(server)
    caller = Caller(server.ws_url, from_number=JAMES)
    accepted: list[dict] = []

    async def accept_when_escalated() -> bool:
        rows = await escalations_of(server, caller.call_sid)
        if rows and not accepted:
            async with aiohttp.ClientSession() as http:
                login = {"name": "alice", "password": PASSWORD}
                async with http.post(f"{server.base_url}/api/agent/login", json=login) as resp:
                    alice = {"Authorization": f"Bearer {(await resp.json())['token']}"}
                async with http.post(
                    f"{server.base_url}/api/agent/status", json={"status": "available"}, headers=alice
                ):
                    pass
                url = f"{server.base_url}/api/agent/escalations/{rows[0]['id']}/accept"
                async with http.post(url, headers=alice) as resp:
                    assert resp.status == 200, await resp.text()
                    accepted.append(await resp.json())
        return bool(accepted)

    await caller.run(
        [
            Pause(1.0),
            PlayAudio(synth_phone("I want to speak to a real person."), "ask for person"),
            Until(accept_when_escalated, what="escalation accepted"),
            _transferred(server, caller.call_sid),
        ]
    )
    _check_transfer(server, caller.call_sid)
    record = await server.wait_call_closed(caller.call_sid)
    assert record["outcome"] == "escalated"
    assert record["end_reason"] != "caller_hung_up", record["end_reason"]
