"""Fixtures for end-to-end escalation tests through the live server, on SQLite and on PostgreSQL."""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_url() -> Any:
    """A fresh database for this test session (others share the server), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"ivr_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
