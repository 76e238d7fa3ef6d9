"""Booked callbacks are placed at their time, on virtual time: the real dialler, storage, desk and callback page,
the real twilio library talking to the local recording server, and Twilio's signed webhooks.

The dialler's clock (`SteppedClock`, an `ivr.clock.Clock`) moves only when a test moves it, and then only once
the dialler is asleep again: HTTP to the recorder and the webhooks is real, so time must not run on by itself
(as a fast-forwarding loop would while a socket is quiet)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from ivr import agents as ag
from ivr.agent_desk import AgentDesk
from ivr.callback_dialler import CallbackDialler
from ivr.callbacks import CallbackService
from ivr.metrics import Metrics
from ivr.queue_hours import QueueHours, QueueHoursConfig
from ivr.storage import Storage
from telephony.twilio_rest import TwilioRest
from tests.agent_desk.desk_fixtures import (
    ACCOUNT_SID,
    AGENT_NUMBER,
    API_TOKEN,
    add_agent,
    handoff_payload,
    start_call,
)
from tests.helpers.twilio_recorder import RecordedRequest, TwilioRecorder
from tests.helpers.virtual_call import SyncStorage

AUTH_TOKEN = "twilio-auth-token"
PUBLIC = "https://ivr.example.test"
LA_CALLER = "+12135550147"
CALL_SID = "CA" + "d" * 32
# Monday 24 November 2025, 9:07 am in Los Angeles: the queue (LA hours, 8 am to 6 pm) is open.
START = datetime(2025, 11, 24, 17, 7, tzinfo=UTC)


class SteppedClock:
    """Virtual seconds that pass only in `advance`, which wakes sleepers in order, each once the dialler has gone
    back to sleep (its round of storage and HTTP is over)."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._seq), future))
        await future

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> asyncio.Future[None]:
        raise AssertionError("the dialler only sleeps")

    async def asleep(self) -> None:
        """Until someone sleeps on this clock (the dialler between rounds)."""
        for _ in range(5000):
            self._sleepers = [s for s in self._sleepers if not s[2].done()]
            heapq.heapify(self._sleepers)
            if self._sleepers:
                return
            await asyncio.sleep(0.002)
        raise AssertionError("the dialler never went back to sleep")

    async def advance(self, seconds: float) -> None:
        end = self.t + seconds
        while True:
            await self.asleep()
            due, _, future = self._sleepers[0]
            if due > end:
                break
            heapq.heappop(self._sleepers)
            self.t = max(self.t, due)
            future.set_result(None)
            await asyncio.sleep(0)
        self.t = end
        await self.asleep()


@dataclass
class Rig:
    recorder: TwilioRecorder
    storage: SyncStorage
    desk: AgentDesk
    service: CallbackService
    dialler: CallbackDialler
    client: TestClient
    clock: SteppedClock

    def now(self) -> datetime:
        return self.dialler.now()

    async def until(self, when: datetime) -> None:
        """Lets virtual time run to `when`."""
        await self.clock.advance(max(0.0, (when - self.now()).total_seconds()))

    def placed(self) -> list[RecordedRequest]:
        return self.recorder.find("/Calls.json")

    async def placed_call(self, callback_id: int, n: int) -> str:
        """Waits (virtual time) for the n-th call placed for the callback; its SID once the dialler stored it."""
        while len(self.placed()) < n:
            await self.clock.advance(60.0)
        sid = self.placed()[n - 1].sid
        await self.clock.asleep()
        assert sid is not None
        return sid

    def sign(self, path: str, form: dict[str, str]) -> str:
        return str(RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form))

    async def twilio_posts(self, path: str, **form: str) -> int:
        """A webhook as Twilio sends it: form-encoded and signed for the public URL."""
        response = await self.client.post(path, data=form, headers={"X-Twilio-Signature": self.sign(path, form)})
        return response.status

    async def book(self, phone: str = LA_CALLER, index: int = 2) -> tuple[dict, datetime]:
        await start_call(self.storage, CALL_SID)
        escalation = await self.desk.enqueue(
            CALL_SID,
            trigger="vip",
            reason="VIP caller",
            queue="billing",
            priority=90,
            payload=handoff_payload(CALL_SID),
        )
        row = await self.service.request(CALL_SID, phone, "cust-42", handoff_payload(CALL_SID))
        assert (await self.storage.get_escalation(escalation))["status"] == "waiting"  # texting is no booking
        when = self.service.slots(row)[index]
        booked = await self.service.schedule(row["token"], when)
        assert (await self.storage.get_escalation(escalation))["status"] == "callback"  # out of the live queue
        return booked, when


@asynccontextmanager
async def rig(tmp_path: Path, *, hours: QueueHoursConfig | None = None) -> AsyncIterator[Rig]:
    recorder = await TwilioRecorder().start()
    sync = Storage(f"sqlite:///{tmp_path / 'dialler.sqlite3'}")
    sync.create_all()
    storage = SyncStorage(sync)
    clock = SteppedClock()

    def now() -> datetime:
        return START + timedelta(seconds=clock.now())

    twilio = TwilioRest(ACCOUNT_SID, "auth-token", api_base_url=recorder.url, backoff_s=0.01)
    desk = AgentDesk(storage, twilio, api_token=API_TOKEN, public_url=PUBLIC, metrics=Metrics(), clock=now)
    # The agent who takes answered callbacks: an account as `ivr agents add` makes it, available.
    await add_agent(storage, "alice", AGENT_NUMBER)
    await storage.run(ag.set_status, storage.sync, "alice", "available", now=now())
    service = CallbackService(storage, twilio, PUBLIC, "+14155550100", now, on_change=desk.notify, hours=hours)
    dialler = CallbackDialler(service, clock=clock, now=now, desk=desk, auth_token=AUTH_TOKEN, poll_s=3600.0)
    app = web.Application()
    app.add_routes(service.routes() + dialler.routes())
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    task = asyncio.ensure_future(dialler.run())
    try:
        await clock.asleep()
        yield Rig(recorder, storage, desk, service, dialler, client, clock)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await recorder.stop()
        storage.close()


async def test_a_callback_booked_for_t_is_placed_at_t_with_machine_detection(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, when = await r.book()
        await r.until(when - timedelta(seconds=1))
        assert r.placed() == []
        page = await (await r.client.get(f"/callback/{row['token']}")).text()
        assert "We will call you on" in page and "called you" not in page

        await r.until(when + timedelta(seconds=1))
        [placed] = r.placed()
        stored = await r.storage.get_callback(callback_id=row["id"])
        assert datetime.fromisoformat(stored["last_attempt_at"]) == when  # placed at T, to the second
        base = f"{PUBLIC}/twilio/callbacks/{row['id']}"
        assert placed.form["To"] == LA_CALLER and placed.form["Url"] == f"{base}/answer"
        assert placed.form["MachineDetection"] == "DetectMessageEnd" and placed.form["AsyncAmd"] == "true"
        assert placed.form["AsyncAmdStatusCallback"] == f"{base}/amd"
        assert placed.form["StatusCallback"] == f"{base}/status"
        assert stored["status"] == "dialling" and stored["outbound_call_sid"] == placed.sid
        assert stored["call_attempts"] == 1
        page = await (await r.client.get(f"/callback/{row['token']}")).text()
        assert "calling you now" in page and "called you" not in page


async def test_a_machine_gets_a_voicemail_and_a_new_attempt_until_the_attempts_run_out(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, when = await r.book()
        retry = timedelta(minutes=r.service.config.retry_after_minutes)
        for attempt in range(1, r.service.config.max_call_attempts + 1):
            sid = await r.placed_call(row["id"], attempt)
            answer = await r.client.post(
                f"/twilio/callbacks/{row['id']}/answer",
                data={"CallSid": sid},
                headers={"X-Twilio-Signature": r.sign(f"/twilio/callbacks/{row['id']}/answer", {"CallSid": sid})},
            )
            assert answer.status == 200 and "Acme Support" in await answer.text()
            missed_at = r.now()
            status = await r.twilio_posts(
                f"/twilio/callbacks/{row['id']}/amd", CallSid=sid, AnsweredBy="machine_end_beep"
            )
            assert status == 204
            [voicemail] = r.recorder.find(f"/Calls/{sid}.json")
            assert "<Say>" in voicemail.form["Twiml"] and voicemail.form["Twiml"].endswith("<Hangup /></Response>")
            assert "Acme Support" in voicemail.form["Twiml"]
            stored = await r.storage.get_callback(callback_id=row["id"])
            assert stored["status"] == "no_answer" and stored["answered_by"] == "machine_end_beep"
            if attempt < r.service.config.max_call_attempts:
                next_at = datetime.fromisoformat(stored["scheduled_for"])
                assert next_at - missed_at >= retry and "try again on" in voicemail.form["Twiml"]
                # the status callback that ends the voicemail call counts nothing twice
                await r.twilio_posts(f"/twilio/callbacks/{row['id']}/status", CallSid=sid, CallStatus="completed")
                assert (await r.storage.get_callback(callback_id=row["id"]))["call_attempts"] == attempt
            else:
                assert "call us when it suits you" in voicemail.form["Twiml"]
        await r.until(r.now() + timedelta(days=2))
        assert len(r.placed()) == r.service.config.max_call_attempts  # bounded
        page = await (await r.client.get(f"/callback/{row['token']}")).text()
        assert "could not reach you" in page and "called you" not in page


async def test_a_person_who_answers_is_bridged_to_the_agent_who_accepts(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, when = await r.book()
        await r.until(when + timedelta(seconds=1))
        [placed] = r.placed()
        await r.placed_call(row["id"], 1)
        assert (await r.desk.snapshot())["items"] == []  # nobody to bridge until a person answers

        assert await r.twilio_posts(f"/twilio/callbacks/{row['id']}/amd", CallSid=placed.sid, AnsweredBy="human") == 204
        [item] = (await r.desk.snapshot("billing"))["items"]
        assert item["call_sid"] == placed.sid and item["trigger"] == "callback"
        assert item["customer_tier"] == "gold" and item["last_3_messages"][-1] == "I want a refund now"
        assert "caller frustrated" in item["reason"]

        accepted = await r.desk.accept(item["id"], "alice")
        [bridge] = r.recorder.find(f"/Calls/{placed.sid}.json")
        assert f">{AGENT_NUMBER}</Number>" in bridge.form["Twiml"]  # alice's own reach, with her whisper
        assert accepted["status"] == "transferred"
        stored = await r.storage.get_callback(callback_id=row["id"])
        assert stored["status"] == "done" and stored["answered_by"] == "human"
        page = await (await r.client.get(f"/callback/{row['token']}")).text()
        assert "We called you on" in page


async def test_busy_or_no_answer_books_the_next_attempt_within_the_queue_hours(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, when = await r.book(index=-1)  # the last slot of the coming days: 5:30 pm, the queue closes at 6
        await r.until(when + timedelta(seconds=1))
        [placed] = r.placed()
        await r.placed_call(row["id"], 1)
        await r.twilio_posts(f"/twilio/callbacks/{row['id']}/status", CallSid=placed.sid, CallStatus="no-answer")
        stored = await r.storage.get_callback(callback_id=row["id"])
        retry = datetime.fromisoformat(stored["scheduled_for"]).astimezone(ZoneInfo("America/Los_Angeles"))
        assert stored["status"] == "no_answer" and (retry.hour, retry.minute) == (8, 0)  # next morning it opens
        assert retry.weekday() < 5


async def test_webhooks_without_twilios_signature_are_refused(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, _ = await r.book()
        bad = await r.client.post(f"/twilio/callbacks/{row['id']}/amd", data={"AnsweredBy": "human"})
        assert bad.status == 403
        assert (await r.client.post("/twilio/sms", data={"From": LA_CALLER, "Body": "STOP"})).status == 403


async def test_stop_opts_the_number_out_of_every_text_and_start_undoes_it(tmp_path: Path):
    async with rig(tmp_path) as r:
        assert await r.twilio_posts("/twilio/sms", From=LA_CALLER, Body="Stop") == 200
        await start_call(r.storage, CALL_SID)
        row = await r.service.request(CALL_SID, LA_CALLER, "cust-42", handoff_payload(CALL_SID))
        assert r.recorder.find("/Messages.json") == []
        assert row["status"] == "failed" and "opted out" in row["error"]

        assert await r.twilio_posts("/twilio/sms", From=LA_CALLER, Body="START") == 200
        other = "CA" + "e" * 32
        await start_call(r.storage, other)
        again = await r.service.request(other, LA_CALLER, "cust-42", handoff_payload(other))
        [sms] = r.recorder.find("/Messages.json")
        assert again["status"] == "sent" and sms.form["Body"].startswith("Acme Support:")
        assert "Reply STOP" in sms.form["Body"]


async def test_the_page_shows_los_angeles_times_for_a_213_number(tmp_path: Path):
    # The contact centre is in New York (9 am to 5 pm Eastern); the caller's number is in Los Angeles.
    eastern = QueueHours(time_zone="America/New_York", opens="09:00", closes="17:00")
    async with rig(tmp_path, hours=QueueHoursConfig(default=eastern)) as r:
        await start_call(r.storage, CALL_SID)
        row = await r.service.request(CALL_SID, LA_CALLER, "cust-42", handoff_payload(CALL_SID))
        text = await (await r.client.get(f"/callback/{row['token']}")).text()
        assert "Times are Pacific time." in text
        days = re.findall(r"<summary>([^<]+)</summary>", text)
        # Monday 12:07 pm Eastern: today's slots from 12:30 pm Eastern, which is 9:30 am in Los Angeles.
        assert days[:2] == ["Monday 24 November", "Tuesday 25 November"] and "Saturday 29 November" not in days
        buttons = re.findall(r'name="slot" value="([^"]+)"[^>]*>([^<]+)</button>', text)
        assert buttons[0][1] == "9:30 am" and buttons[7][1] == "1:00 pm".replace(":00", "")  # 4:30 pm Eastern
        la = ZoneInfo("America/Los_Angeles")
        for value, label in buttons:
            local = datetime.fromisoformat(value).astimezone(la)
            minutes = f":{local.minute:02d}" if local.minute else ""
            assert label == f"{local.hour % 12 or 12}{minutes} {'am' if local.hour < 12 else 'pm'}"
            assert 6 <= local.hour < 14  # 9 to 5 Eastern is 6 am to 2 pm Pacific
        booked = await (await r.client.post(f"/callback/{row['token']}", data={"slot": buttons[3][0]})).text()
        assert "Monday 24 November at 11 am Pacific time" in booked
        [_, confirmation] = r.recorder.find("/Messages.json")
        assert "Monday 24 November at 11 am Pacific time" in confirmation.form["Body"]


async def test_a_call_twilio_never_reports_on_counts_as_missed_and_is_tried_again(tmp_path: Path):
    async with rig(tmp_path) as r:
        row, when = await r.book()
        await r.placed_call(row["id"], 1)  # ... and then no webhook ever arrives
        await r.until(when + timedelta(minutes=9))
        assert (await r.storage.get_callback(callback_id=row["id"]))["status"] == "dialling"
        await r.until(when + timedelta(minutes=12))
        stored = await r.storage.get_callback(callback_id=row["id"])
        assert stored["status"] == "no_answer" and "no word from Twilio" in stored["error"]
        await r.placed_call(row["id"], 2)
