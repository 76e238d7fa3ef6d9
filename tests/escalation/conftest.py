"""Fixtures for the escalation, handoff and report tests: storage on SQLite and on PostgreSQL."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

# The repo root (``ivr``, ``flows``) and this folder (``escalation_script``) must be importable however
# pytest is started; the project is not pip-installed into the venv.
for _p in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from ivr.storage import Storage  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def pg_database_url():
    """A fresh database per test session (other sessions share the server), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"ivr_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path):
    """Empty call records, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        store = Storage(f"sqlite:///{tmp_path / 'ivr.sqlite3'}")
    else:
        store = Storage(request.getfixturevalue("pg_database_url"))
        store.drop_all()
    store.create_all()
    try:
        yield store
    finally:
        if request.param == "postgres":
            store.drop_all()
        store.dispose()
