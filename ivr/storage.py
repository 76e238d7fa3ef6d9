"""Call records: calls, events, turns, escalations, callbacks, and an append-only audit log.

SQLAlchemy Core on SQLite by default (a file under the data directory), PostgreSQL when the
database URL says so. Writes happen as things happen (one short transaction each), so a crash
mid-call loses at most the work of the frame being processed.

The methods are synchronous; the async server calls them through `AsyncStorage`, which runs
them on one dedicated thread so writes for a call stay in order and never block the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, ParamSpec, TypedDict, TypeVar, cast

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult, Engine

log = logging.getLogger("ivr.storage")
T = TypeVar("T")
P = ParamSpec("P")

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("stream_sid", String(64)),
    Column("caller", String(64)),
    Column("customer_id", String(64), index=True),
    Column("region", String(32)),
    Column("flow", String(64)),
    Column("params", JSON, nullable=False, default=dict),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("end_reason", String(64)),
    # outcome: resolved (confirmed), escalated, abandoned (hung up), silent, error, in_progress
    Column("outcome", String(32), nullable=False, default="in_progress"),
    Column("first_response_ms", Float),
)

events = Table(
    "call_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("data", JSON, nullable=False, default=dict),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("intent", String(64)),
    Column("confidence", Float),
    Column("sentiment", Float),
    Column("loudness_spl_db", Float),
    Column("reply", Text, nullable=False, default=""),
    # latency breakdown in ms: endpoint_wait, asr, understanding, tts_first_frame, total
    Column("latency", JSON, nullable=False, default=dict),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("queue", String(64), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("status", String(32), nullable=False, default="waiting"),  # waiting, accepted, transferred, callback, closed
    Column("agent", String(128)),
    Column("payload", JSON, nullable=False, default=dict),
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="SET NULL"), index=True),
    Column("customer_id", String(64), index=True),
    Column("phone", String(32), nullable=False),
    Column("token", String(64), nullable=False, unique=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    Column("status", String(32), nullable=False, default="pending"),  # pending, sent, failed, scheduled, done
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_sid", String(64)),
    Column("error", Text),
    Column("scheduled_for", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("details", JSON, nullable=False, default=dict),
)

_APPEND_ONLY_SQLITE = [
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]
_APPEND_ONLY_POSTGRES = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]


# -- records as the methods below return them: dicts, with times as ISO 8601 strings ----------------
class CallRow(TypedDict):
    call_sid: str
    stream_sid: str | None
    caller: str | None
    customer_id: str | None
    region: str | None
    flow: str | None
    params: dict[str, Any]
    started_at: str
    ended_at: str | None
    end_reason: str | None
    outcome: str
    first_response_ms: float | None


class EventRow(TypedDict):
    at: str
    kind: str
    data: dict[str, Any]


class TurnRow(TypedDict):
    id: int
    call_sid: str
    idx: int
    at: str
    channel: str
    text: str
    intent: str | None
    confidence: float | None
    sentiment: float | None
    loudness_spl_db: float | None
    reply: str
    latency: dict[str, float]


class EscalationRow(TypedDict):
    id: int
    call_sid: str
    at: str
    trigger: str
    reason: str
    queue: str
    priority: int
    status: str
    agent: str | None
    payload: dict[str, Any]


class CallRecord(CallRow):
    """One call with its events, turns and escalations (`Storage.get_call`, `GET /api/calls/{sid}`)."""

    events: list[EventRow]
    turns: list[TurnRow]
    escalations: list[EscalationRow]


class CallbackRow(TypedDict):
    id: int
    call_sid: str | None
    customer_id: str | None
    phone: str
    token: str
    idempotency_key: str
    status: str
    attempts: int
    message_sid: str | None
    error: str | None
    scheduled_for: str | None
    created_at: str
    payload: dict[str, Any]


class AuditRow(TypedDict):
    id: int
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


class CallNotFound(KeyError):
    pass


class Storage:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    # -- schema -----------------------------------------------------------------------------
    def create_all(self) -> None:
        metadata.create_all(self.engine)
        statements = _APPEND_ONLY_SQLITE if self.engine.dialect.name == "sqlite" else _APPEND_ONLY_POSTGRES
        with self.engine.begin() as conn:
            for stmt in statements:
                conn.execute(text(stmt))

    def drop_all(self) -> None:
        metadata.drop_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- calls ------------------------------------------------------------------------------
    def start_call(
        self,
        call_sid: str,
        *,
        stream_sid: str | None,
        caller: str | None,
        params: dict[str, Any],
        region: str | None = None,
        flow: str | None = None,
        started_at: datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(calls.c.call_sid).where(calls.c.call_sid == call_sid)).first()
            if exists:
                # The same call back on a new stream (returned from an agent, a reconnect): one record, reopened.
                conn.execute(
                    update(calls)
                    .where(calls.c.call_sid == call_sid)
                    .values(stream_sid=stream_sid, ended_at=None, end_reason=None, outcome="in_progress")
                )
                return
            conn.execute(
                insert(calls).values(
                    call_sid=call_sid,
                    stream_sid=stream_sid,
                    caller=caller,
                    params=params,
                    region=region,
                    flow=flow,
                    started_at=started_at or utcnow(),
                    outcome="in_progress",
                )
            )

    def update_call(self, call_sid: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(calls).where(calls.c.call_sid == call_sid).values(**values))

    def end_call(self, call_sid: str, *, reason: str, outcome: str, ended_at: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(calls)
                .where(calls.c.call_sid == call_sid, calls.c.ended_at.is_(None))
                .values(ended_at=ended_at or utcnow(), end_reason=reason, outcome=outcome)
            )

    def close_open_calls(self, reason: str) -> int:
        """Closes calls a previous process left open (crash): they end as errors, not as resolved."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(calls)
                .where(calls.c.ended_at.is_(None))
                .values(ended_at=utcnow(), end_reason=reason, outcome="error")
            )
            return result.rowcount or 0

    def add_event(self, call_sid: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(call_sid=call_sid, at=utcnow(), kind=kind, data=data or {}))

    def add_turn(self, call_sid: str, **values: Any) -> None:
        values.setdefault("at", utcnow())
        values.setdefault("latency", {})
        values.setdefault("reply", "")
        with self.engine.begin() as conn:
            conn.execute(insert(turns).values(call_sid=call_sid, **values))

    def get_call(self, call_sid: str) -> CallRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(calls).where(calls.c.call_sid == call_sid)).mappings().first()
            if row is None:
                raise CallNotFound(call_sid)
            record = cast(CallRecord, _jsonable(row))
            record["events"] = [
                cast(EventRow, _jsonable(r))
                for r in conn.execute(
                    select(events.c.at, events.c.kind, events.c.data)
                    .where(events.c.call_sid == call_sid)
                    .order_by(events.c.id)
                ).mappings()
            ]
            record["turns"] = [
                cast(TurnRow, _jsonable(r))
                for r in conn.execute(
                    select(turns).where(turns.c.call_sid == call_sid).order_by(turns.c.idx, turns.c.id)
                ).mappings()
            ]
            record["escalations"] = [
                cast(EscalationRow, _jsonable(r))
                for r in conn.execute(
                    select(escalations).where(escalations.c.call_sid == call_sid).order_by(escalations.c.id)
                ).mappings()
            ]
            return record

    def list_calls(self, since: datetime | None = None) -> list[CallRow]:
        query = select(calls).order_by(calls.c.started_at)
        if since is not None:
            query = query.where(calls.c.started_at >= since)
        with self.engine.connect() as conn:
            return [cast(CallRow, _jsonable(r)) for r in conn.execute(query).mappings()]

    # -- escalations ------------------------------------------------------------------------
    def add_escalation(
        self, call_sid: str, *, trigger: str, reason: str, queue: str, priority: int, payload: dict[str, Any]
    ) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(escalations).values(
                    call_sid=call_sid,
                    at=utcnow(),
                    trigger=trigger,
                    reason=reason,
                    queue=queue,
                    priority=priority,
                    status="waiting",
                    payload=payload,
                )
            )
            return _inserted_id(result)

    def update_escalation(self, escalation_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(escalations).where(escalations.c.id == escalation_id).values(**values))

    def get_escalation(self, escalation_id: int) -> EscalationRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(escalations).where(escalations.c.id == escalation_id)).mappings().first()
            return cast(EscalationRow, _jsonable(row)) if row else None

    def list_escalations(self, status: str | None = None) -> list[EscalationRow]:
        query = select(escalations).order_by(escalations.c.priority.desc(), escalations.c.id)
        if status is not None:
            query = query.where(escalations.c.status == status)
        with self.engine.connect() as conn:
            return [cast(EscalationRow, _jsonable(r)) for r in conn.execute(query).mappings()]

    # -- callbacks --------------------------------------------------------------------------
    def add_callback(self, **values: Any) -> int:
        """Inserts a callback request; an existing idempotency key returns the existing row's id."""
        values.setdefault("created_at", utcnow())
        with self.engine.begin() as conn:
            existing = conn.execute(
                select(callbacks.c.id).where(callbacks.c.idempotency_key == values["idempotency_key"])
            ).first()
            if existing:
                return int(existing[0])
            result = conn.execute(insert(callbacks).values(**values))
            return _inserted_id(result)

    def update_callback(self, callback_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(callbacks).where(callbacks.c.id == callback_id).values(**values))

    def get_callback(self, *, callback_id: int | None = None, token: str | None = None) -> CallbackRow | None:
        query = select(callbacks)
        query = (
            query.where(callbacks.c.id == callback_id)
            if callback_id is not None
            else query.where(callbacks.c.token == token)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            return cast(CallbackRow, _jsonable(row)) if row else None

    def list_callbacks(self, status: str | None = None) -> list[CallbackRow]:
        query = select(callbacks).order_by(callbacks.c.id)
        if status is not None:
            query = query.where(callbacks.c.status == status)
        with self.engine.connect() as conn:
            return [cast(CallbackRow, _jsonable(r)) for r in conn.execute(query).mappings()]

    # -- audit and erasure ------------------------------------------------------------------
    def audit(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(audit_log).values(
                    at=utcnow(), actor=actor, action=action, subject=subject, details=details or {}
                )
            )

    def list_audit(self) -> list[AuditRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()
            return [cast(AuditRow, _jsonable(r)) for r in rows]

    def erase_customer(self, customer_id: str, *, actor: str) -> dict[str, int]:
        """GDPR erasure: deletes the customer's calls with their transcripts, escalations and callbacks.

        The audit entry records counts, never the erased content.
        """
        with self.engine.begin() as conn:
            sids = [r[0] for r in conn.execute(select(calls.c.call_sid).where(calls.c.customer_id == customer_id))]
            counts = {"calls": len(sids), "turns": 0, "events": 0, "escalations": 0, "callbacks": 0}
            if sids:
                counts["turns"] = conn.execute(delete(turns).where(turns.c.call_sid.in_(sids))).rowcount or 0
                counts["events"] = conn.execute(delete(events).where(events.c.call_sid.in_(sids))).rowcount or 0
                counts["escalations"] = (
                    conn.execute(delete(escalations).where(escalations.c.call_sid.in_(sids))).rowcount or 0
                )
            counts["callbacks"] = (
                conn.execute(
                    delete(callbacks).where(
                        (callbacks.c.customer_id == customer_id) | (callbacks.c.call_sid.in_(sids) if sids else False)
                    )
                ).rowcount
                or 0
            )
            if sids:
                conn.execute(delete(calls).where(calls.c.call_sid.in_(sids)))
            conn.execute(
                insert(audit_log).values(
                    at=utcnow(), actor=actor, action="erase_customer", subject=customer_id, details=counts
                )
            )
        if self.engine.dialect.name == "sqlite":
            # Deleted rows still sit in the write-ahead log until a checkpoint: fold it in and truncate it.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return counts

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


class AsyncStorage:
    """Runs Storage methods on one dedicated thread: ordered writes, a free event loop."""

    def __init__(self, storage: Storage) -> None:
        self.sync = storage
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivr-db")
        self.on_error: Callable[[str, BaseException], None] | None = None

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Queues a write without waiting for it; a failure is logged with its call id, never lost silently."""

        def done(fut: Future[object]) -> None:
            exc = fut.exception()
            if exc is not None:
                log.error("storage write %s(%s) failed: %s", fn.__name__, args[:1], exc, exc_info=exc)
                if self.on_error is not None:
                    self.on_error(fn.__name__, exc)

        self._pool.submit(fn, *args, **kwargs).add_done_callback(done)

    # Each Storage method, awaited on the storage thread.
    async def create_all(self) -> None:
        await self.run(self.sync.create_all)

    async def start_call(
        self,
        call_sid: str,
        *,
        stream_sid: str | None,
        caller: str | None,
        params: dict[str, Any],
        region: str | None = None,
        flow: str | None = None,
        started_at: datetime | None = None,
    ) -> None:
        await self.run(
            self.sync.start_call,
            call_sid,
            stream_sid=stream_sid,
            caller=caller,
            params=params,
            region=region,
            flow=flow,
            started_at=started_at,
        )

    async def update_call(self, call_sid: str, **values: Any) -> None:
        await self.run(self.sync.update_call, call_sid, **values)

    async def end_call(self, call_sid: str, *, reason: str, outcome: str, ended_at: datetime | None = None) -> None:
        await self.run(self.sync.end_call, call_sid, reason=reason, outcome=outcome, ended_at=ended_at)

    async def close_open_calls(self, reason: str) -> int:
        return await self.run(self.sync.close_open_calls, reason)

    async def add_event(self, call_sid: str, kind: str, data: dict[str, Any] | None = None) -> None:
        await self.run(self.sync.add_event, call_sid, kind, data)

    async def add_turn(self, call_sid: str, **values: Any) -> None:
        await self.run(self.sync.add_turn, call_sid, **values)

    async def get_call(self, call_sid: str) -> CallRecord:
        return await self.run(self.sync.get_call, call_sid)

    async def list_calls(self, since: datetime | None = None) -> list[CallRow]:
        return await self.run(self.sync.list_calls, since)

    async def add_escalation(
        self, call_sid: str, *, trigger: str, reason: str, queue: str, priority: int, payload: dict[str, Any]
    ) -> int:
        return await self.run(
            self.sync.add_escalation,
            call_sid,
            trigger=trigger,
            reason=reason,
            queue=queue,
            priority=priority,
            payload=payload,
        )

    async def update_escalation(self, escalation_id: int, **values: Any) -> None:
        await self.run(self.sync.update_escalation, escalation_id, **values)

    async def get_escalation(self, escalation_id: int) -> EscalationRow | None:
        return await self.run(self.sync.get_escalation, escalation_id)

    async def list_escalations(self, status: str | None = None) -> list[EscalationRow]:
        return await self.run(self.sync.list_escalations, status)

    async def add_callback(self, **values: Any) -> int:
        return await self.run(self.sync.add_callback, **values)

    async def update_callback(self, callback_id: int, **values: Any) -> None:
        await self.run(self.sync.update_callback, callback_id, **values)

    async def get_callback(self, *, callback_id: int | None = None, token: str | None = None) -> CallbackRow | None:
        return await self.run(self.sync.get_callback, callback_id=callback_id, token=token)

    async def list_callbacks(self, status: str | None = None) -> list[CallbackRow]:
        return await self.run(self.sync.list_callbacks, status)

    async def audit(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> None:
        await self.run(self.sync.audit, actor=actor, action=action, subject=subject, details=details)

    async def list_audit(self) -> list[AuditRow]:
        return await self.run(self.sync.list_audit)

    async def erase_customer(self, customer_id: str, *, actor: str) -> dict[str, int]:
        return await self.run(self.sync.erase_customer, customer_id, actor=actor)

    async def count(self, table: Table) -> int:
        return await self.run(self.sync.count, table)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sync.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Erased transcripts must not linger in freed pages of the file.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def _inserted_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no primary key for the insert")
    return int(key[0])


def _jsonable(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            out[key] = value.isoformat()
        elif isinstance(value, (bytes, bytearray)):
            out[key] = json.loads(value)
        else:
            out[key] = value
    return out
