"""Shared fixtures: models loaded once per test session, and a live server on a real loopback socket.

`live_server` starts the whole product the way `ivr serve` does (aiohttp on 127.0.0.1, a SQLite
file, the demo CRM as a real HTTP service, Twilio's REST API replaced by a local recording server)
and shares the expensive models between tests.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from flows.backends import BackendConfig
from ivr.config import Settings
from tests.helpers.twilio_recorder import TwilioRecorder, twilio_recorder  # noqa: F401 (fixture)

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
API_TOKEN = "test-api-token"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """An empty database on this machine's PostgreSQL (others share the server), dropped afterwards; the test
    is skipped when the server is not there."""
    psycopg = pytest.importorskip("psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database for this test session, dropped afterwards."""
    with fresh_postgres_database("ivr_test") as url:
        yield url


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: pytest.TempPathFactory):
    from ivr.services import Models

    # Deterministic speech: a caller's phrase sounds the same in every run, so what Whisper hears does too.
    settings = Settings(data_dir=tmp_path_factory.mktemp("models"), tts={"deterministic": True})
    models = Models.load(settings)
    yield models
    from models.asr_pool import ProcessTranscriber
    from models.tts_pool import ProcessSynthesizer

    if isinstance(models.asr.transcriber, ProcessTranscriber):
        models.asr.transcriber.close()  # the Whisper worker processes
    if isinstance(models.tts.synth, ProcessSynthesizer):
        models.tts.synth.close()  # the Piper worker processes


@pytest.fixture(scope="session")
def synth_phone(shared_models) -> Callable[[str], bytes]:
    """Caller speech synthesized with the Piper voice, as 8 kHz mu-law (what a phone line carries)."""
    cache: dict[str, bytes] = {}

    def synthesize(text: str) -> bytes:
        if text not in cache:
            cache[text] = shared_models.tts.synth.synthesize_phone(text)
        return cache[text]

    return synthesize


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    services: Any
    app: web.Application
    crm_url: str
    crm_runner: web.AppRunner
    recorder: TwilioRecorder
    settings: Settings

    async def crm_control(self, **knobs: Any) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.crm_url}/_control", json=knobs) as resp:
                assert resp.status == 200, await resp.text()

    async def get_json(self, path: str, token: str | None = API_TOKEN) -> tuple[int, Any]:
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http:
            async with http.get(self.base_url + path, headers=headers) as resp:
                try:
                    body = await resp.json()
                except Exception:  # noqa: BLE001
                    body = await resp.text()
                return resp.status, body

    async def wait_call_closed(self, call_sid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The call's record once its session has ended and every write has landed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if call_sid not in self.services.sessions:
                try:
                    record = await self.services.db.get_call(call_sid)
                except KeyError:
                    record = None
                if record is not None and record["ended_at"]:
                    await self.services.db.run(lambda: None)  # drain queued writes
                    return await self.services.db.get_call(call_sid)
            await asyncio.sleep(0.05)
        raise AssertionError(f"call {call_sid} did not close within {timeout} s")


StartServer = Callable[..., Awaitable[LiveServer]]


@pytest_asyncio.fixture
async def start_server(
    tmp_path: Path,
    shared_models,
    twilio_recorder: TwilioRecorder,  # noqa: F811
) -> AsyncIterator[StartServer]:
    from ivr.app import build_app, start_site
    from ivr.demo_crm import start_demo_crm
    from ivr.services import build_all
    from telephony.twilio_rest import TwilioRest

    started: list[tuple[web.AppRunner, web.AppRunner, Any]] = []
    # As `ivr serve` does (ivr/cli.py): no credential or card number in any line the server logs, here the
    # captured ones.
    from ivr.access_log import PrivateDataFilter

    card_filter, filtered = PrivateDataFilter(), logging.getLogger().handlers[:]

    async def start(**overrides: Any) -> LiveServer:
        for handler in filtered:
            handler.addFilter(card_filter)
        crm_runner, crm_url = await start_demo_crm("127.0.0.1", 0)
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "data_dir": tmp_path / f"data{len(started)}",
            "insecure_dev": True,
            "api_token": API_TOKEN,
            "twilio_api_base_url": twilio_recorder.url,
            "twilio_auth_token": None,
            "backends": {"crm": BackendConfig(base_url=crm_url, timeout_s=2.0)},
        }
        values.update(overrides)
        settings = Settings(**values)
        # The webhook runs unsigned here, but the REST client needs credentials: the recorder accepts any.
        twilio = TwilioRest(
            settings.twilio_account_sid,
            settings.twilio_auth_token or "recorder-token",
            api_base_url=settings.twilio_api_base_url,
        )
        services = await build_all(settings, models=shared_models, twilio=twilio)
        app = build_app(services)
        runner, port = await start_site(app, "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        settings.public_url = base
        services.set_public_url(base)
        started.append((runner, crm_runner, services))
        return LiveServer(
            base_url=base,
            ws_url=f"ws://127.0.0.1:{port}/twilio/media",
            services=services,
            app=app,
            crm_url=crm_url,
            crm_runner=crm_runner,
            recorder=twilio_recorder,
            settings=settings,
        )

    yield start
    for runner, crm_runner, services in started:
        await runner.cleanup()
        await crm_runner.cleanup()
        await services.close()
    for handler in filtered:
        handler.removeFilter(card_filter)
