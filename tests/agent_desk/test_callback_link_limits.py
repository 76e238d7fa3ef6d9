"""Callback links expire and cannot be used without limit; each refusal is a page the caller understands."""

from __future__ import annotations

import re
from datetime import timedelta

from aiohttp.test_utils import TestClient

from ivr.callbacks import CallbackConfig, CallbackService
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import FakeClock, handoff_payload, start_call

CALL_SID = "CA" + "c" * 32


async def link(service: CallbackService, storage: AsyncStorage) -> tuple[dict, str]:
    await start_call(storage, CALL_SID)
    row = await service.request(CALL_SID, "+14155552671", "cust-42", handoff_payload(CALL_SID))
    return row, f"/callback/{row['token']}"


async def slot(client: TestClient, path: str, index: int = 0) -> str:
    page = await client.get(path)
    assert page.status == 200
    return re.findall(r'name="slot" value="([^"]+)"', await page.text())[index]


def test_defaults_live_in_the_settings():
    from ivr.config import Settings

    assert Settings().callbacks == CallbackConfig(link_ttl_days=7, max_reschedules=5, max_requests_per_minute=20)


async def test_a_link_works_for_seven_days_then_shows_an_expired_page(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage, clock: FakeClock
):
    row, path = await link(callback_service, storage)
    clock.advance(days=6, hours=23)
    picked = await slot(client, path)
    assert (await client.post(path, data={"slot": picked})).status == 200

    clock.advance(hours=2)  # 7 days and 1 hour after the text
    page = await client.get(path)
    text = await page.text()
    assert page.status == 410 and "Link expired" in text and "call us again" in text
    assert 'name="slot"' not in text
    refused = await client.post(path, data={"slot": (clock() + timedelta(hours=1)).isoformat()})
    assert refused.status == 410 and "expired" in await refused.text()
    stored = await storage.get_callback(callback_id=row["id"])
    assert stored["status"] == "booked"  # the booking made in time stands
    assert stored["scheduled_for"] == picked


async def test_a_link_moves_its_slot_at_most_max_reschedules_times(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage
):
    row, path = await link(callback_service, storage)
    slots = [await slot(client, path, i % 4) for i in range(6)]
    for picked in slots[:5]:
        assert (await client.post(path, data={"slot": picked})).status == 200
    sixth = await client.post(path, data={"slot": slots[5]})
    text = await sixth.text()
    assert sixth.status == 429 and "too many times" in text and "Link used too often" in text
    stored = await storage.get_callback(callback_id=row["id"])
    assert stored["scheduled_for"] == slots[4]


async def test_a_link_answers_at_most_20_requests_a_minute(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage, clock: FakeClock
):
    _, path = await link(callback_service, storage)
    statuses = [(await client.get(path)).status for _ in range(21)]
    assert statuses == [200] * 20 + [429]
    busy = await client.get(path)
    assert busy.status == 429 and "wait a minute" in await busy.text()
    # Guessing other links is limited per link too, but a guess never finds a page.
    assert (await client.get("/callback/guess")).status == 404
    clock.advance(seconds=61)
    assert (await client.get(path)).status == 200
