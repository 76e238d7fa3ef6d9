"""The callback link on a phone-sized screen in Debian's chromium, and the desk's callback list.

`CALLBACK_SCREENSHOT=docs/callback.png` saves what the customer sees after booking (the README's picture)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ivr.callbacks import CallbackService
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import API_TOKEN, PASSWORD, add_agent, handoff_payload, start_call
from tests.helpers.twilio_recorder import TwilioRecorder

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14's CSS pixels
CALL_SID = "CA" + "b" * 32

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_a_213_caller_books_in_los_angeles_time_on_a_phone_and_can_change_or_cancel(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    await start_call(storage, CALL_SID)
    row = await callback_service.request(CALL_SID, "+1 213 555 0147", "cust-42", handoff_payload(CALL_SID))
    async with chromium() as browser:
        page = await browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
        await page.goto(str(client.make_url(f"/callback/{row['token']}")))
        assert "Times are Pacific time." in await page.inner_text("body")
        # Monday 24 November, 6:07 am in Los Angeles: the queue opens at 8.
        first_day = page.locator("details").first
        assert (await first_day.locator("summary").inner_text()) == "Monday 24 November"
        assert (await first_day.locator("button").first.inner_text()) == "8 am"
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]  # nothing to scroll sideways on a phone

        await first_day.get_by_role("button", name="2:30 pm", exact=True).tap()
        await page.wait_for_selector("p.booked")
        assert "Monday 24 November at 2:30 pm Pacific time" in await page.inner_text("p.booked")
        await page.click("text=Change or cancel")
        await page.wait_for_selector("p.current")
        assert "Monday 24 November at 2:30 pm Pacific time" in await page.inner_text("p.current")
        assert await page.inner_text("button.picked") == "2:30 pm"  # the booked slot stands out
        if os.environ.get("CALLBACK_SCREENSHOT"):
            await page.screenshot(path=os.environ["CALLBACK_SCREENSHOT"], full_page=False)

        await page.click("text=Cancel the callback")
        await page.wait_for_selector("h1:has-text('Callback cancelled')")
    stored = await storage.get_callback(callback_id=row["id"])
    assert stored["status"] == "cancelled"


async def test_the_desk_lists_callbacks_with_their_state(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    await start_call(storage, CALL_SID)
    row = await callback_service.request(CALL_SID, "+12135550147", "cust-42", handoff_payload(CALL_SID))
    when = callback_service.slots(row)[0]
    await callback_service.schedule(row["token"], when)
    refused = await client.get("/api/callbacks")
    assert refused.status == 401
    listed = await (await client.get("/api/callbacks", headers={"Authorization": f"Bearer {API_TOKEN}"})).json()
    [item] = listed["callbacks"]
    assert item["state"] == "booked" and item["when"] == "Monday 24 November at 8 am Pacific time"
    assert item["phone"].endswith("****") and "0147" not in item["phone"]

    await add_agent(storage, "alice", "+14155550001")
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(str(client.make_url("/agent")))
        await page.fill("#login-name", "alice")
        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button")
        panel = page.locator("#callbacks table.callbacks tbody tr")
        await panel.first.wait_for(timeout=10_000)
        text = await panel.first.inner_text()
        assert "Monday 24 November at 8 am Pacific time" in text and "booked" in text and "billing" in text
