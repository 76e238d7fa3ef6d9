"""SMS callback: one text per request with an unguessable link; the picked slot reaches the agent queue."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from aiohttp.test_utils import TestClient

from ivr.agent_desk import AgentDesk
from ivr.callbacks import CallbackService
from ivr.storage import AsyncStorage
from tests.agent_desk.desk_fixtures import (
    FROM_NUMBER,
    PUBLIC_URL,
    auth,
    handoff_payload,
    start_call,
)
from tests.helpers.twilio_recorder import TwilioRecorder

CALL_SID = "CA" + "f" * 32


async def request(service: CallbackService, storage: AsyncStorage, phone: str, **kwargs) -> dict:
    await start_call(storage, CALL_SID)
    return await service.request(CALL_SID, phone, "cust-42", handoff_payload(CALL_SID), **kwargs)


async def test_callback_sms_carries_the_link(
    callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    row = await request(callback_service, storage, "(415) 555-2671")

    [msg] = twilio_recorder.find("/Messages.json")
    assert msg.form["To"] == "+14155552671" and msg.form["From"] == FROM_NUMBER
    link = re.search(r"https://\S+", msg.form["Body"]).group(0)
    assert link == f"{PUBLIC_URL}/callback/{row['token']}" == row["link"]
    assert len(row["token"]) >= 32
    assert row["status"] == "sent" and row["message_sid"].startswith("SM") and row["attempts"] == 1
    assert row["phone"] == "+14155552671"


async def test_same_request_twice_sends_one_message(
    callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    first = await request(callback_service, storage, "+14155552671")
    second = await request(callback_service, storage, "+14155552671")
    assert len(twilio_recorder.find("/Messages.json")) == 1
    assert second["id"] == first["id"] and second["token"] == first["token"]
    assert len(await storage.list_callbacks()) == 1


async def test_invalid_number_sends_nothing_and_is_recorded_as_failed(
    callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    row = await request(callback_service, storage, "12345")
    assert twilio_recorder.requests == []
    assert row["status"] == "failed" and "invalid phone number" in row["error"]
    stored = await storage.get_callback(callback_id=row["id"])
    assert stored["status"] == "failed" and stored["message_sid"] is None


async def test_twilio_500_once_is_retried_and_one_message_goes_out(
    callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    twilio_recorder.fail_next(500)
    row = await request(callback_service, storage, "+14155552671")
    sent = [r for r in twilio_recorder.find("/Messages.json") if r.status == 201]
    assert len(sent) == 1 and len(twilio_recorder.requests) == 2
    assert row["status"] == "sent" and row["attempts"] == 2 and row["error"] is None


async def test_number_twilio_rejects_is_recorded_with_its_code(
    callback_service: CallbackService, storage: AsyncStorage, twilio_recorder: TwilioRecorder
):
    twilio_recorder.invalid_numbers.add("+442071838750")
    row = await request(callback_service, storage, "+44 20 7183 8750")
    assert len(twilio_recorder.requests) == 1  # a 4xx is never retried
    assert row["status"] == "failed" and "21211" in row["error"] and row["attempts"] == 1


async def test_callback_request_takes_the_caller_out_of_the_waiting_queue(
    client: TestClient, desk: AgentDesk, callback_service: CallbackService, storage: AsyncStorage
):
    await start_call(storage, CALL_SID)
    eid = await desk.enqueue(
        CALL_SID, trigger="vip", reason="VIP caller", queue="billing", priority=90, payload=handoff_payload(CALL_SID)
    )
    await request(callback_service, storage, "+14155552671", escalation_id=eid)
    assert (await storage.get_escalation(eid))["status"] == "callback"
    assert (await (await client.get("/api/agent/queue", headers=auth())).json())["items"] == []


async def test_a_booking_is_confirmed_in_words_and_never_reads_as_already_called(
    client: TestClient,
    callback_service: CallbackService,
    storage: AsyncStorage,
    clock,
    twilio_recorder: TwilioRecorder,
):
    row = await request(callback_service, storage, "+14155552671")
    path = f"/callback/{row['token']}"

    page = await client.get(path)
    assert page.status == 200
    slots = re.findall(r'name="slot" value="([^"]+)"', await page.text())
    assert len(slots) >= 4
    times = [datetime.fromisoformat(s) for s in slots]
    assert all(t > clock() and t.minute in (0, 30) for t in times)

    picked = times[1]
    resp = await client.post(path, data={"slot": slots[1]})
    text = await resp.text()
    assert resp.status == 200 and "Booked" in text and "Pacific time" in text
    stored = await storage.get_callback(callback_id=row["id"])
    assert stored["status"] == "booked" and datetime.fromisoformat(stored["scheduled_for"]) == picked
    assert any(
        a["action"] == "schedule_callback" and a["subject"] == f"callback:{row['id']}"
        for a in await storage.list_audit()
    )
    link_sms, confirmation = twilio_recorder.find("/Messages.json")
    assert "Pacific time" in confirmation.form["Body"] and row["token"] in confirmation.form["Body"]

    # Booking is no callback yet: the desk queue stays empty and the page says when we will call.
    clock.now = picked + timedelta(minutes=2)
    assert (await (await client.get("/api/agent/queue", headers=auth())).json())["items"] == []
    again = await (await client.get(path)).text()
    assert "We will call you on" in again and "called you" not in again


async def test_callback_page_rejects_unknown_links_and_bad_times(
    client: TestClient, callback_service: CallbackService, storage: AsyncStorage, clock
):
    assert (await client.get("/callback/not-a-real-token")).status == 404
    row = await request(callback_service, storage, "+14155552671")
    path = f"/callback/{row['token']}"
    assert (await client.post(path, data={"slot": "tomorrow-ish"})).status == 400
    far = (clock() + timedelta(days=30)).isoformat()
    assert (await client.post(path, data={"slot": far})).status == 400
    assert (await storage.get_callback(callback_id=row["id"]))["status"] == "sent"
