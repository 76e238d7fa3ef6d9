"""The audit log on PostgreSQL, as an auditor checks it: the server's role can append to it but not change,
delete or truncate it; the schema's triggers are created once, not recreated at each start; `ivr audit verify`
passes on an intact log and names the first row a superuser tampered with."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from ivr.storage import AsyncStorage, Storage
from tests.conftest import PG_ADMIN_DSN, PG_SERVER

pytestmark = pytest.mark.postgres


@dataclass
class Databases:
    owner_url: str  # the schema's owner (a superuser here), who runs `ivr db init`
    app_url: str  # the role the server runs as
    app_role: str


@pytest.fixture
def databases() -> Iterator[Databases]:
    psycopg = pytest.importorskip("psycopg")
    suffix = uuid.uuid4().hex[:12]
    name, role = f"ivr_audit_{suffix}", f"ivr_app_{suffix}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield Databases(f"{PG_SERVER}/{name}", f"postgresql+psycopg://{role}@127.0.0.1:5432/{name}", role)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def ivr(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", *args],
        capture_output=True,
        text=True,
        env={"IVR_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def trigger_oids(storage: Storage) -> dict[str, int]:
    with storage.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tgname, oid FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal")
        )
        return {name: int(oid) for name, oid in rows}


def test_server_role_appends_to_a_hash_chained_log_it_cannot_rewrite(databases: Databases):
    proc = ivr(databases.owner_url, "db", "init", "--grant-to", databases.app_role)
    assert proc.returncode == 0, proc.stderr
    owner = Storage(databases.owner_url)
    triggers = trigger_oids(owner)
    assert set(triggers) == {"audit_log_append_only", "audit_log_no_truncate"}

    app = Storage(databases.app_url)
    app.create_all()  # what every server start does: changes nothing
    assert trigger_oids(owner) == triggers
    app.start_call("CA1", stream_sid=None, caller="+14155550199", params={})
    app.add_turn("CA1", idx=0, channel="voice", text="private words")
    for n in range(3):
        app.audit(actor="alice", action="accept_escalation", subject=f"esc:{n}", details={"n": n})
    assert app.erase_customer("nobody", actor="dpo")["calls"] == 0
    counts = ivr(databases.app_url, "erase", "--phone", "+14155550199", "--actor", "dpo")
    assert counts.returncode == 0, counts.stderr
    assert [a["action"] for a in app.list_audit()][-2:] == ["erase_customer", "erase"]

    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(Exception, match="permission denied|append-only"), app.engine.begin() as conn:
            conn.execute(text(statement))
    with pytest.raises(Exception, match="append-only"), owner.engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_log"))  # even the owner, while the trigger stands

    verified = ivr(databases.app_url, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["rows"] == 5

    # A superuser can get past the triggers; the chain still shows where history was rewritten.
    with owner.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE audit_log SET details = '{\"n\": 7}' WHERE id = 2"))
    tampered = ivr(databases.app_url, "audit", "verify")
    assert tampered.returncode == 1
    assert json.loads(tampered.stdout)["first_broken_id"] == 2
    app.dispose()
    owner.dispose()


def test_a_failed_write_on_postgres_logs_no_value_from_the_statement(databases: Databases, caplog):
    storage = Storage(databases.owner_url)
    storage.create_all()
    storage.add_callback(phone="+14155550199", token="tok-secret-1", idempotency_key="k1")
    db = AsyncStorage(storage)
    caplog.set_level(logging.ERROR, logger="ivr.storage")
    # The same token under another key: a unique violation whose DETAIL would quote the token.
    future = db.submit(storage.add_callback, phone="+14155550188", token="tok-secret-1", idempotency_key="k2")
    with pytest.raises(Exception, match="UniqueViolation|unique"):
        future.result(timeout=10)
    db.close()
    assert any(r.name == "ivr.storage" and r.levelno == logging.ERROR for r in caplog.records)
    assert "tok-secret" not in caplog.text and "0188" not in caplog.text
