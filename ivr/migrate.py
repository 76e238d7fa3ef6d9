"""The records' schema, kept by Alembic migrations (`ivr/migrations/versions`).

`upgrade` brings a database to the newest revision: an empty one gets every table, one made by the first
release (tables created by `create_all`, no `alembic_version`) is adopted as revision 0001 and migrated from
there. At the newest revision it reads one row and writes nothing, so a server role without DDL rights can
run it at every start. On PostgreSQL an advisory lock makes nodes that start together migrate one at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("ivr.migrate")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_RELEASE = "0001"
_MIGRATION_LOCK = 7_310_442_002


def _config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None, "no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrates to `revision`; returns (revision before, revision after)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
        try:
            before = MigrationContext.configure(conn).get_current_revision()
            if before is None and inspect(conn).has_table("calls"):
                _adopt_first_release(conn)
                before = FIRST_RELEASE
            if before != head_revision() or revision != "head":
                command.upgrade(_config(conn), revision)
                conn.commit()
                log.info("database schema migrated from %s to %s", before or "empty", revision)
            after = MigrationContext.configure(conn).get_current_revision()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
    assert after is not None
    return before, after


def _adopt_first_release(conn: Connection) -> None:
    """A database the first release made with `create_all`: fill in what its earliest builds lacked (the
    audit chain's columns), then record it as revision 0001."""
    columns = {c["name"] for c in inspect(conn).get_columns("audit_log")}
    for name in ("prev_hash", "hash"):
        if name not in columns:
            conn.execute(text(f"ALTER TABLE audit_log ADD COLUMN {name} VARCHAR(64)"))
    command.stamp(_config(conn), FIRST_RELEASE)
    conn.commit()
    log.info("adopted a database made by the first release as schema revision %s", FIRST_RELEASE)
