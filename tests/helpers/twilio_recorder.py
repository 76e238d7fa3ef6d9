"""A local stand-in for Twilio's REST API that records every request the real `twilio` library sends.

Point `TwilioRest(api_base_url=recorder.url)` at it. It answers like Twilio for the two resources
the server uses (Calls/{sid}.json update, Calls.json create, Messages.json create) and can be told to fail:
`fail_next(500)` answers the next request(s) with a server error; numbers in `invalid_numbers`
get Twilio's 400 / 21211 "not a valid phone number".

    async def test_x(twilio_recorder): ...      # fixture (import it into your conftest.py)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    status: int = 0  # what the recorder answered
    at: float = 0.0  # loop time it arrived
    sid: str | None = None  # the SID the recorder gave what it created

    @property
    def resource(self) -> str:
        """'Calls/CA....json', 'Messages.json', ...: the path after /Accounts/{sid}/."""
        parts = self.path.split("/Accounts/", 1)
        return parts[1].split("/", 1)[1] if len(parts) == 2 and "/" in parts[1] else self.path


@dataclass
class TwilioRecorder:
    requests: list[RecordedRequest] = field(default_factory=list)
    invalid_numbers: set[str] = field(default_factory=set)
    _failures: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    def fail_next(self, status: int = 500, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def find(self, suffix: str) -> list[RecordedRequest]:
        """Requests whose path ends with `suffix` ('Messages.json', 'Calls/CA1.json')."""
        return [r for r in self.requests if r.path.endswith(suffix)]

    async def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not predicate(self.requests):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), timeout)

    # -- server ---------------------------------------------------------------------------
    async def start(self) -> TwilioRecorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        rec = RecordedRequest(
            request.method, request.path, form, dict(request.headers), at=asyncio.get_running_loop().time()
        )
        self.requests.append(rec)
        try:
            response = self._answer(rec)
            rec.status = response.status
            return response
        finally:
            self._changed.set()

    def _answer(self, rec: RecordedRequest) -> web.Response:
        if self._failures:
            status = self._failures.pop(0)
            return _error(status, status, "Internal Server Error" if status >= 500 else "Bad Request")
        if not rec.headers.get("Authorization", "").startswith("Basic "):
            return _error(401, 20003, "Authenticate")
        parts = rec.path.split("/")
        # /2010-04-01/Accounts/{AccountSid}/{Resource...}
        if len(parts) < 5 or parts[2] != "Accounts":
            return _error(404, 20404, "The requested resource was not found")
        account = parts[3]
        resource = "/".join(parts[4:])
        if rec.method == "POST" and resource == "Messages.json":
            to = rec.form.get("To", "")
            if to in self.invalid_numbers:
                return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            if not rec.form.get("Body") or not rec.form.get("From"):
                return _error(400, 21602, "Message body is required.")
            message = _message(account, rec.form)
            rec.sid = message["sid"]
            return web.json_response(message, status=201)
        if rec.method == "POST" and resource == "Calls.json":
            to = rec.form.get("To", "")
            if to in self.invalid_numbers:
                return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            if not rec.form.get("Url") and not rec.form.get("Twiml"):
                return _error(400, 21205, "Url parameter is required.")
            call = {**_call(account, "CA" + secrets.token_hex(16)), "status": "queued", "direction": "outbound-api"}
            rec.sid = call["sid"]
            return web.json_response({**call, "to": to, "from": rec.form.get("From")}, status=201)
        if rec.method == "POST" and resource.startswith("Calls/") and resource.endswith(".json"):
            call_sid = resource[len("Calls/") : -len(".json")]
            if not call_sid.startswith("CA"):
                return _error(404, 20404, "The requested resource was not found")
            return web.json_response(_call(account, call_sid), status=200)
        return _error(404, 20404, "The requested resource was not found")


def _error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _message(account: str, form: dict[str, str]) -> dict[str, Any]:
    return {
        "sid": "SM" + secrets.token_hex(16),
        "account_sid": account,
        "to": form.get("To"),
        "from": form.get("From"),
        "body": form.get("Body"),
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": "1",
        "api_version": "2010-04-01",
        "date_created": "Mon, 24 Nov 2025 12:00:00 +0000",
        "uri": f"/2010-04-01/Accounts/{account}/Messages.json",
    }


def _call(account: str, call_sid: str) -> dict[str, Any]:
    return {
        "sid": call_sid,
        "account_sid": account,
        "status": "in-progress",
        "direction": "inbound",
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account}/Calls/{call_sid}.json",
    }


@pytest_asyncio.fixture
async def twilio_recorder() -> AsyncIterator[TwilioRecorder]:
    recorder = await TwilioRecorder().start()
    try:
        yield recorder
    finally:
        await recorder.stop()
