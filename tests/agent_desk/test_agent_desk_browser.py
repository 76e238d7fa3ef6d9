"""The agent desk page in Debian's chromium: see the escalated call's context, click Accept, the call moves."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
from aiohttp.test_utils import TestClient

from ivr.agent_desk import AgentDesk
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import AGENT_NUMBER, API_TOKEN, handoff_payload, start_call
from tests.helpers.twilio_recorder import TwilioRecorder

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


async def test_agent_sees_context_accepts_and_the_call_is_transferred(
    client: TestClient, desk: AgentDesk, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    playwright_api = pytest.importorskip("playwright.async_api")
    call_sid = "CA" + "7" * 32
    await start_call(storage, call_sid)
    reason = "caller frustrated after two failed lookups"
    await desk.enqueue(
        call_sid, trigger="frustration", reason=reason, queue="billing", priority=80, payload=handoff_payload(call_sid)
    )

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
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))
            # In the fragment the token never reaches the server; the page trades it for a WebSocket ticket.
            await page.goto(str(client.make_url("/agent")) + f"#token={API_TOKEN}")
            card = page.locator("article.card", has_text=reason)
            await card.wait_for(timeout=10_000)
            text = await card.inner_text()
            for expected in (
                "cust-42",
                "gold",
                "$7,350.00",
                "refund_request (64%)",
                "I want a refund now",
                "frustration",
                "waiting",
            ):
                assert expected in text
            assert "token" not in page.url  # dropped from the address bar once read
            assert sockets and all("ticket=" in url and API_TOKEN not in url for url in sockets)

            await page.fill("#agent", "alice")
            await card.get_by_role("button", name="Accept").click()
            await twilio_recorder.wait_for(lambda reqs: any(r.path.endswith(f"Calls/{call_sid}.json") for r in reqs))
            done = page.locator("#handled article.card", has_text=reason)
            await done.wait_for(timeout=10_000)
            assert "Transferred to alice" in await done.inner_text()
            # The live queue (pushed over the WebSocket) no longer offers the call.
            await page.locator("#queue article.card").first.wait_for(state="detached", timeout=10_000)
        finally:
            await browser.close()

    [req] = twilio_recorder.find(f"Calls/{call_sid}.json")
    assert ET.fromstring(req.form["Twiml"]).find("Dial/Number").text == AGENT_NUMBER
    assert (await desk.storage.list_escalations())[0]["agent"] == "alice"
