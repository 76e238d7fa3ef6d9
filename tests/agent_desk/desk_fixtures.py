"""Shared values and helpers for the agent desk tests (fixtures are in conftest.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from ivr import agents as ag
from ivr.storage import AsyncStorage, utcnow

API_TOKEN = "desk-secret-token"
AGENT_NUMBER = "+14155550199"  # alice's reach in the tests that need one agent
TWILIO_AUTH_TOKEN = "twilio-auth-token"
PASSWORD = "correct horse battery"
FROM_NUMBER = "+14155550100"
ACCOUNT_SID = "AC" + "0" * 32
PUBLIC_URL = "https://ivr.example.test"


class FakeClock:
    """The desk's and callbacks' notion of now; tests move it instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


def handoff_payload(call_sid: str, **overrides: object) -> dict:
    """What `Handoff.model_dump(mode="json")` produces for an escalated call."""
    payload = {
        "call_sid": call_sid,
        "customer_id": "cust-42",
        "lifetime_value": 7350.0,
        "customer_tier": "gold",
        "issue_history": ["late delivery (2025-10)"],
        "sentiment_trend": [0.1, -0.4, -0.7],
        "intent_guess": "refund_request",
        "confidence": 0.64,
        "last_3_messages": ["where is my parcel", "this is the third time", "I want a refund now"],
        "reason": "caller frustrated after two failed lookups",
        "trigger": "frustration",
        "preferred_channel": "voice",
        "region": "us_west",
        "transcript_url": f"/api/calls/{call_sid}",
        "queue": "billing",
        "priority": 80,
        "goodwill_offer": None,
        "created_at": "2025-11-24T14:00:00+00:00",
    }
    payload.update(overrides)
    return payload


async def start_call(storage: AsyncStorage, call_sid: str) -> None:
    await storage.start_call(call_sid, stream_sid="MZ" + call_sid[2:], caller="+14155550123", params={})


async def add_agent(storage: AsyncStorage, name: str, reach: str, *, display_name: str = "") -> None:
    """An account as `ivr agents add` makes it."""
    await storage.run(
        ag.add_agent,
        storage.sync,
        name,
        display_name=display_name or name.title(),
        reach=ag.Reach.parse(reach),
        password=PASSWORD,
        now=utcnow(),
    )


async def login(client: TestClient, name: str, *, available: bool = True) -> dict[str, str]:
    """Logs the agent in on the desk (and makes them available); returns their Authorization header."""
    resp = await client.post("/api/agent/login", json={"name": name, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    if available:
        resp = await client.post("/api/agent/status", json={"status": "available"}, headers=headers)
        assert resp.status == 200, await resp.text()
    return headers


async def agent_alice(client: TestClient, storage: AsyncStorage) -> dict[str, str]:
    await add_agent(storage, "alice", AGENT_NUMBER)
    return await login(client, "alice")


async def twilio_posts(client: TestClient, path_qs: str, params: dict[str, str]) -> str:
    """Posts a webhook the way Twilio does: form-encoded and signed over the public URL."""
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(PUBLIC_URL + path_qs, params)
    resp = await client.post(path_qs, data=params, headers={"X-Twilio-Signature": signature})
    assert resp.status == 200, await resp.text()
    return await resp.text()
