"""Fixtures for end-to-end escalation tests through the live server, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def server_on_db(request, start_server) -> Callable[..., Awaitable[Any]]:
    """`await server_on_db(**overrides)`: the live server on SQLite, or on an emptied PostgreSQL database."""
    overrides: dict[str, Any] = {}
    if request.param == "postgres":
        from ivr.storage import Storage

        url = request.getfixturevalue("pg_url")
        store = Storage(url)
        store.drop_all()  # each test counts only its own calls
        store.dispose()
        overrides["database_url"] = url

    async def start(**more: Any) -> Any:
        return await start_server(**{**overrides, **more})

    start.db_kind = request.param  # type: ignore[attr-defined]
    return start
