"""Whole calls on virtual time (tests/helpers/virtual_call.py): fake ASR and TTS, the real session, flows,
policy, storage schema and demo CRM. Every test here is marked `looptime`: waits cost no wall time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.helpers.virtual_call import Harness, build_harness

MakeHarness = Callable[..., Awaitable[Harness]]


@pytest_asyncio.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    """`await make_harness(flow=..., budget_s=..., asr=FakeAsr(...), **settings)`, built inside the test so that
    its waits are on virtual time too."""
    built: list[Harness] = []

    async def make(**overrides: Any) -> Harness:
        harness = await build_harness(tmp_path / f"h{len(built)}", **overrides)
        built.append(harness)
        return harness

    yield make
    for harness in built:
        await harness.close()
