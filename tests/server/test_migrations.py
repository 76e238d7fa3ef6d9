"""`ivr db upgrade`, as an operator runs it on a fleet's database: an empty database gets the whole schema, and a
database the first release made (tables from `create_all`, no migration history) is adopted and migrated with
its records intact. The migrated schema is exactly what the code declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from ivr.migrate import head_revision
from ivr.storage import Storage, metadata
from tests.conftest import fresh_postgres_database

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ivr.sqlite3'}"
        return
    with fresh_postgres_database("ivr_migrate") as url:
        yield url


def ivr_db_upgrade(url: str) -> dict[str, str | None]:
    done = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "db", "upgrade"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"IVR_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def schema_drift(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def load_first_release(url: str) -> None:
    """Creates what the first release's `create_all` created, from the schema it left (tests/server/data)."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.executescript((DATA / "first_release_sqlite.sql").read_text())
        con.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute((DATA / "first_release_postgres.sql").read_text())  # type: ignore[arg-type]


def test_an_empty_database_gets_the_whole_schema(empty_db: str) -> None:
    result = ivr_db_upgrade(empty_db)

    assert result == {"schema": "migrated", "from": None, "to": head_revision()}
    assert schema_drift(empty_db) == []
    again = ivr_db_upgrade(empty_db)
    assert again == {"schema": "current", "from": head_revision(), "to": head_revision()}


def test_a_first_release_database_is_migrated_with_its_records(empty_db: str) -> None:
    load_first_release(empty_db)
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO calls (call_sid, caller, params, started_at, outcome)"
                " VALUES ('CAold', '+14155550100', '{}', '2026-11-01 10:00:00+00:00', 'resolved')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO turns (call_sid, idx, at, channel, text, reply, latency)"
                " VALUES ('CAold', 0, '2026-11-01 10:00:05+00:00', 'speech', 'where is my order', 'It ships today', '{}')"
            )
        )
    engine.dispose()

    result = ivr_db_upgrade(empty_db)

    assert result == {"schema": "migrated", "from": "0001", "to": head_revision()}
    assert schema_drift(empty_db) == []
    storage = Storage(empty_db)
    try:
        record = storage.get_call("CAold")
        assert record["outcome"] == "resolved" and record["caller"] == "+14155550100"
        assert [t["text"] for t in record["turns"]] == ["where is my order"]
        assert "node_id" in {c["name"] for c in inspect(storage.engine).get_columns("calls")}
        # The first release's append-only audit log is still append-only after the migration.
        storage.audit(actor="operator", action="test", subject="CAold")
        with pytest.raises(DBAPIError), storage.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        storage.dispose()


def test_a_server_start_on_a_first_release_database_migrates_it(empty_db: str) -> None:
    """The single-node default needs no operator step: the server's own start brings the schema up."""
    load_first_release(empty_db)
    storage = Storage(empty_db)
    try:
        storage.create_all()
        storage.start_call("CAnew", stream_sid="MZnew", caller=None, params={}, node_id="node-a")
        assert storage.open_call_owners() == {"node-a"}
    finally:
        storage.dispose()
    assert schema_drift(empty_db) == []
