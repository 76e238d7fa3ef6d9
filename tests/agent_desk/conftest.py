"""Fixtures for the agent desk and SMS callback tests: a real SQLite file, the real twilio library
talking to a local recording server, and an aiohttp app with the desk and callback routes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ivr.agent_desk import AgentDesk  # noqa: E402
from ivr.callbacks import CallbackService  # noqa: E402
from ivr.metrics import Metrics  # noqa: E402
from ivr.storage import AsyncStorage, Storage  # noqa: E402
from telephony.twilio_rest import TwilioRest  # noqa: E402
from tests.agent_desk.desk_fixtures import (  # noqa: E402
    ACCOUNT_SID,
    API_TOKEN,
    FROM_NUMBER,
    PUBLIC_URL,
    TWILIO_AUTH_TOKEN,
    FakeClock,
)
from tests.helpers.twilio_recorder import TwilioRecorder, twilio_recorder  # noqa: E402,F401


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 11, 24, 14, 7, 0, tzinfo=UTC))


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[AsyncStorage]:
    sync = Storage(f"sqlite:///{tmp_path / 'desk.sqlite3'}")
    sync.create_all()
    store = AsyncStorage(sync)
    yield store
    store.close()


@pytest.fixture
def twilio(twilio_recorder: TwilioRecorder) -> TwilioRest:  # noqa: F811 (the fixture imported above)
    return TwilioRest(ACCOUNT_SID, TWILIO_AUTH_TOKEN, api_base_url=twilio_recorder.url, backoff_s=0.01)


@pytest.fixture
def desk(storage: AsyncStorage, twilio: TwilioRest, clock: FakeClock) -> AgentDesk:
    return AgentDesk(
        storage,
        twilio,
        api_token=API_TOKEN,
        public_url=PUBLIC_URL,
        webhook_token=TWILIO_AUTH_TOKEN,
        metrics=Metrics(),
        clock=clock,
        refresh_s=0.2,
    )


@pytest.fixture
def callback_service(storage: AsyncStorage, twilio: TwilioRest, desk: AgentDesk, clock: FakeClock) -> CallbackService:
    return CallbackService(
        storage,
        twilio,
        PUBLIC_URL,
        FROM_NUMBER,
        clock,
        on_change=desk.notify,
        api_token=API_TOKEN,
        authorize=desk.viewer,
    )


@pytest.fixture
def app(desk: AgentDesk, callback_service: CallbackService) -> web.Application:
    application = web.Application()
    application.add_routes(desk.routes())
    application.add_routes(callback_service.routes())
    return application


@pytest_asyncio.fixture
async def client(app: web.Application) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client
