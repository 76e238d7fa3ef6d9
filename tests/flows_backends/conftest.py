"""Fixtures: a real demo CRM on loopback and gateways pointed at it."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

# The project is not pip-installed into the venv: make the repo root importable however pytest starts.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from flows.backends import BackendConfig, BackendMetrics, HttpBackendGateway  # noqa: E402
from ivr.demo_crm import start_demo_crm  # noqa: E402


class CrmHandle:
    """The running demo CRM, driven over HTTP the way the demo drives it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def control(self, **knobs: Any) -> dict[str, Any]:
        async with self._session.post(f"{self.url}/_control", json=knobs) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def requests(self, route: str | None = None) -> int:
        """Requests the CRM received (all, or for one "METHOD /route")."""
        async with self._session.get(f"{self.url}/_stats") as resp:
            stats = await resp.json()
        return stats["total"] if route is None else stats["requests"].get(route, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def crm() -> AsyncIterator[CrmHandle]:
    runner, url = await start_demo_crm("127.0.0.1", 0)
    async with aiohttp.ClientSession() as session:
        yield CrmHandle(url, session)
    await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_gateway(crm: CrmHandle, clock: FakeClock) -> AsyncIterator[Callable[..., HttpBackendGateway]]:
    made: list[HttpBackendGateway] = []

    def make(*, base_url: str | None = None, metrics: BackendMetrics | None = None, **cfg: Any) -> HttpBackendGateway:
        cfg.setdefault("backoff_s", 0.01)
        config = BackendConfig(base_url=base_url or crm.url, **cfg)
        gw = HttpBackendGateway({"crm": config}, metrics=metrics or BackendMetrics(), clock=clock)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.close()
