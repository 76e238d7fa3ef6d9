"""Call records: calls, events, turns, escalations, callbacks, and an append-only audit log.

SQLAlchemy Core on SQLite by default (a file under the data directory), PostgreSQL when the
database URL says so. Writes happen as things happen (one short transaction each), so a crash
mid-call loses at most the work of the frame being processed.

The methods are synchronous; the async server calls them through `AsyncStorage`, which runs
them on one dedicated thread so writes for a call stay in order and never block the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect as pyinspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError

from ivr.privacy import ErasureRequest, PrivacyConfig, same_phone
from ivr.storage_queue import (
    StorageCall,
    StorageConfig,
    StorageQueue,
    StorageUnavailable,
    load_spool,
    save_spool,
)

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
    # The node serving the call's media stream: a starting node closes only its own calls, and when a node's
    # lease lapses the survivors end the calls it held (`ivr/nodes.py`).
    Column("node_id", String(64), index=True),
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
    # waiting, accepted, transferred, callback, closed, abandoned (the caller hung up while waiting)
    Column("status", String(32), nullable=False, default="waiting"),
    Column("agent", String(128)),
    Column("payload", JSON, nullable=False, default=dict),
)

# Placing the call back (ivr/callback_dialler.py); added to an older table by migration 0003.
CALLBACK_DIAL_COLUMNS: dict[str, Any] = {
    "call_attempts": Integer(),  # calls placed so far
    "outbound_call_sid": String(64),  # the call being placed or last placed
    "answered_by": String(32),  # Twilio's answering-machine detection: human, machine_end_beep, ...
    "last_attempt_at": DateTime(timezone=True),
}

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="SET NULL"), index=True),
    Column("customer_id", String(64), index=True),
    Column("phone", String(32), nullable=False),
    Column("token", String(64), nullable=False, unique=True),
    Column("idempotency_key", String(128), nullable=False, unique=True),
    # pending, sent, failed (the link SMS); booked, dialling, no_answer, done, cancelled (the call back)
    Column("status", String(32), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_sid", String(64)),
    Column("error", Text),
    Column("scheduled_for", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
    *(Column(name, type_) for name, type_ in CALLBACK_DIAL_COLUMNS.items()),
)

# Opted out of our texts (an inbound STOP): no SMS goes to these numbers until they send START.
sms_opt_outs = Table(
    "sms_opt_outs",
    metadata,
    Column("phone", String(32), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("keyword", String(16), nullable=False),
)

# Agents of the desk (issue 9): who they are, how they are reached, how they log in, their status.
agents = Table(
    "agents",
    metadata,
    Column("name", String(64), primary_key=True),  # the login name
    Column("display_name", String(128), nullable=False),
    Column("reach", String(256), nullable=False),  # +E.164 number, sip:URI or client:identity
    Column("password_hash", String(256), nullable=False),
    Column("status", String(16), nullable=False, default="away"),  # available, busy, wrap_up, away
    Column("status_reason", Text),
    Column("status_since", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Desk logins: only a hash of each session token is kept.
agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("agent", String(64), ForeignKey("agents.name", ondelete="CASCADE"), index=True, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# One attempt to connect an escalated call to an agent: the dial, its outcome, talk time and wrap-up.
agent_legs = Table(
    "agent_legs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("escalation_id", Integer, ForeignKey("escalations.id", ondelete="CASCADE"), index=True, nullable=False),
    Column("call_sid", String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"), index=True, nullable=False),
    Column("agent", String(64), nullable=False),
    Column("reach", String(256), nullable=False),
    # ringing, answered, completed, no-answer, busy, failed, canceled
    Column("status", String(16), nullable=False, default="ringing"),
    Column("dialled_at", DateTime(timezone=True), nullable=False),
    Column("answered_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("talk_s", Float),
    Column("disposition", String(64)),
    Column("notes", Text),
    Column("wrapped_at", DateTime(timezone=True)),
    Column("crm_status", String(32)),  # written, skipped (no customer), failed
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
    # Hash chain: hash = sha256(prev_hash + the row's content); `Storage.verify_audit` walks it.
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
)

# Files written from call records (the retraining export): which calls each holds, so an erasure or a
# purge can take those calls out of the file too.
exports = Table(
    "exports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("call_sids", JSON, nullable=False, default=list),
)

# Serialises appends to the audit hash chain across processes (server, CLI) on PostgreSQL.
_AUDIT_CHAIN_LOCK = 7_310_442_001


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
    call_attempts: int | None
    outbound_call_sid: str | None
    answered_by: str | None
    last_attempt_at: str | None


class AuditRow(TypedDict):
    id: int
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str | None
    hash: str | None


@dataclass(frozen=True)
class AuditVerification:
    """`ivr audit verify`: whether the audit log's hash chain is intact, and where it first breaks."""

    ok: bool
    rows: int
    unchained: int  # rows written before the chain existed (all before the first chained row)
    first_broken_id: int | None = None
    reason: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


class CallNotFound(KeyError):
    pass


class Storage:
    def __init__(self, url: str) -> None:
        self.url = url
        # hide_parameters: a failed statement's error never carries its values (transcripts, numbers).
        kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    # -- schema -----------------------------------------------------------------------------
    def create_all(self) -> None:
        """Brings the schema to the newest migration (`ivr/migrate.py`); at the newest it changes nothing, so an
        application role without DDL rights can run it at every start."""
        from ivr.migrate import upgrade

        upgrade(self.engine)

    def init_schema(self, grant_to: str | None = None) -> None:
        """The schema, created once by its owner (`ivr db init`). On PostgreSQL `grant_to` is the role the
        server runs as: it may read and write call records but only read and append the audit log."""
        self.create_all()
        if grant_to is None or self.engine.dialect.name != "postgresql":
            return
        role = self.engine.dialect.identifier_preparer.quote(grant_to)
        records = ", ".join(t.name for t in metadata.sorted_tables if t is not audit_log)
        with self.engine.begin() as conn:
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {records} TO {role}"))
            conn.execute(text(f"GRANT SELECT ON alembic_version TO {role}"))
            conn.execute(text(f"REVOKE ALL ON audit_log FROM {role}"))
            conn.execute(text(f"GRANT SELECT, INSERT ON audit_log TO {role}"))
            conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"))

    def drop_all(self) -> None:
        metadata.drop_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))

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
        node_id: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(select(calls.c.call_sid).where(calls.c.call_sid == call_sid)).first()
            if exists:
                # The same call back on a new stream (returned from an agent, a reconnect): one record, reopened.
                conn.execute(
                    update(calls)
                    .where(calls.c.call_sid == call_sid)
                    .values(
                        stream_sid=stream_sid, ended_at=None, end_reason=None, outcome="in_progress", node_id=node_id
                    )
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
                    node_id=node_id,
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

    def close_open_calls(self, reason: str, node_id: str | None) -> int:
        """Closes the calls a node left open (its previous process crashed, or its lease lapsed): they end as
        errors, not as resolved, and their callers no longer wait on the desk. Other nodes' calls are untouched."""
        owner = calls.c.node_id.is_(None) if node_id is None else calls.c.node_id == node_id
        now = utcnow()
        with self.engine.begin() as conn:
            open_sids = select(calls.c.call_sid).where(calls.c.ended_at.is_(None), owner)
            conn.execute(
                update(escalations)
                .where(escalations.c.status == "waiting", escalations.c.call_sid.in_(open_sids))
                .values(status="abandoned")
            )
            result = conn.execute(
                update(calls)
                .where(calls.c.ended_at.is_(None), owner)
                .values(ended_at=now, end_reason=reason, outcome="error")
            )
            return result.rowcount or 0

    def open_call_owners(self) -> set[str | None]:
        """The nodes holding open calls (None: calls started before calls had owners)."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(calls.c.node_id).where(calls.c.ended_at.is_(None)).distinct())}

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
        self,
        call_sid: str,
        *,
        trigger: str,
        reason: str,
        queue: str,
        priority: int,
        payload: dict[str, Any],
        at: datetime | None = None,
    ) -> int:
        """`at`: when the caller joined the queue (a spooled write is stored later than that)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(escalations).values(
                    call_sid=call_sid,
                    at=at or utcnow(),
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

    def opt_out(self, phone: str, keyword: str, at: datetime) -> None:
        """Records an inbound STOP (idempotent); `opt_in` removes it (START)."""
        with self.engine.begin() as conn:
            if conn.execute(select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone == phone)).first() is None:
                conn.execute(insert(sms_opt_outs).values(phone=phone, keyword=keyword[:16], at=at))

    def opt_in(self, phone: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sms_opt_outs).where(sms_opt_outs.c.phone == phone))

    def opted_out(self, phone: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone == phone)).first() is not None

    # -- audit and erasure ------------------------------------------------------------------
    def audit(self, *, actor: str, action: str, subject: str, details: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            self._append_audit(conn, actor=actor, action=action, subject=subject, details=details or {})

    def _append_audit(
        self, conn: Connection, *, actor: str, action: str, subject: str, details: dict[str, Any]
    ) -> None:
        """Appends one entry to the hash chain, inside the caller's transaction. The chain is locked first
        (an advisory lock on PostgreSQL, the write lock on SQLite) so two processes never fork it."""
        if self.engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_AUDIT_CHAIN_LOCK)))
        else:
            conn.execute(text("UPDATE audit_log SET id = id WHERE 0"))  # takes the write lock, touches no row
        prev = conn.execute(
            select(audit_log.c.hash).where(audit_log.c.hash.is_not(None)).order_by(audit_log.c.id.desc()).limit(1)
        ).scalar()
        prev_hash = prev or ""
        at = utcnow()
        conn.execute(
            insert(audit_log).values(
                at=at,
                actor=actor,
                action=action,
                subject=subject,
                details=details,
                prev_hash=prev_hash,
                hash=audit_hash(prev_hash, at, actor, action, subject, details),
            )
        )

    def list_audit(self) -> list[AuditRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings()
            return [cast(AuditRow, _jsonable(r)) for r in rows]

    def verify_audit(self) -> AuditVerification:
        """Walks the hash chain from the first row; reports the first row whose hash or link does not hold."""
        prev_hash, rows, unchained, chained = "", 0, 0, False
        with self.engine.connect() as conn:
            for row in conn.execute(select(audit_log).order_by(audit_log.c.id)).mappings():
                rows += 1
                if row["hash"] is None and not chained:
                    unchained += 1
                    continue
                chained = True
                if row["prev_hash"] != prev_hash:
                    return AuditVerification(False, rows, unchained, row["id"], "does not follow the previous row")
                details = row["details"]
                if isinstance(details, (bytes, bytearray, str)):
                    details = json.loads(details)
                expected = audit_hash(prev_hash, row["at"], row["actor"], row["action"], row["subject"], details)
                if row["hash"] != expected:
                    return AuditVerification(False, rows, unchained, row["id"], "content does not match its hash")
                prev_hash = row["hash"]
        return AuditVerification(True, rows, unchained)

    def erase_customer(self, customer_id: str, *, actor: str) -> dict[str, int]:
        """GDPR erasure by customer id (see `erase`)."""
        return self.erase(ErasureRequest.build(customer_id=customer_id), actor=actor)

    def erase(self, request: ErasureRequest, *, actor: str, in_memory: dict[str, int] | None = None) -> dict[str, int]:
        """GDPR erasure: every call of the customer or from the phone number (identified or not, ended,
        crashed or still open) with its events, turns, escalations and callbacks, the callbacks sent to
        that number, and those calls' lines in tracked export files.

        The audit entry records who asked, whom (the number masked) and counts, never the erased content;
        `in_memory` adds the server's own counts (live calls ended, contexts dropped) to it.
        """
        with self.engine.begin() as conn:
            sids: set[str] = set()
            if request.customer_id:
                sids.update(
                    r[0]
                    for r in conn.execute(select(calls.c.call_sid).where(calls.c.customer_id == request.customer_id))
                )
            if request.phone:
                candidates = conn.execute(
                    select(calls.c.call_sid, calls.c.caller).where(calls.c.caller.like(f"%{request.phone[-4:]}"))
                )
                sids.update(sid for sid, caller in candidates if same_phone(caller, request.phone))
            callback_ids: set[int] = set()
            if request.customer_id:
                callback_ids.update(
                    r[0]
                    for r in conn.execute(select(callbacks.c.id).where(callbacks.c.customer_id == request.customer_id))
                )
            if request.phone:
                candidates = conn.execute(
                    select(callbacks.c.id, callbacks.c.phone).where(callbacks.c.phone.like(f"%{request.phone[-4:]}"))
                )
                callback_ids.update(cid for cid, phone in candidates if same_phone(phone, request.phone))
            counts = self._delete_calls(conn, sorted(sids), callback_ids)
            subject = request.subject
            if request.customer_id and not request.phone:
                subject = request.customer_id  # as before: the customer id alone names the subject
            action = "erase_customer" if request.customer_id and not request.phone else "erase"
            self._append_audit(
                conn, actor=actor, action=action, subject=subject, details={**counts, **(in_memory or {})}
            )
        self._fold_wal()
        return counts

    def purge(self, privacy: PrivacyConfig, *, actor: str, now: datetime | None = None) -> dict[str, int]:
        """Retention: deletes calls (with everything recorded about them) started longer ago than their
        region's retention, and callbacks older than the default retention; audited with counts."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            sids: set[str] = set()
            regions = [r[0] for r in conn.execute(select(calls.c.region).distinct())]
            for region in regions:
                cutoff = now - timedelta(days=privacy.retention_for(region))
                where_region = calls.c.region.is_(None) if region is None else calls.c.region == region
                sids.update(
                    r[0]
                    for r in conn.execute(select(calls.c.call_sid).where(where_region, calls.c.started_at < cutoff))
                )
            old_callbacks = {
                r[0]
                for r in conn.execute(
                    select(callbacks.c.id).where(callbacks.c.created_at < now - timedelta(days=privacy.retention_days))
                )
            }
            counts = self._delete_calls(conn, sorted(sids), old_callbacks)
            self._append_audit(
                conn,
                actor=actor,
                action="purge",
                subject="retention",
                details={
                    **counts,
                    "retention_days": privacy.retention_days,
                    **{f"retention_days_{r}": d for r, d in privacy.retention_days_by_region.items()},
                },
            )
        self._fold_wal()
        return counts

    def _delete_calls(self, conn: Connection, sids: list[str], callback_ids: set[int]) -> dict[str, int]:
        counts = {"calls": len(sids), "turns": 0, "events": 0, "escalations": 0, "callbacks": 0, "export_lines": 0}
        if sids:
            counts["turns"] = conn.execute(delete(turns).where(turns.c.call_sid.in_(sids))).rowcount or 0
            counts["events"] = conn.execute(delete(events).where(events.c.call_sid.in_(sids))).rowcount or 0
            counts["escalations"] = (
                conn.execute(delete(escalations).where(escalations.c.call_sid.in_(sids))).rowcount or 0
            )
            callback_ids = callback_ids | {
                r[0] for r in conn.execute(select(callbacks.c.id).where(callbacks.c.call_sid.in_(sids)))
            }
        if callback_ids:
            counts["callbacks"] = (
                conn.execute(delete(callbacks).where(callbacks.c.id.in_(sorted(callback_ids)))).rowcount or 0
            )
        if sids:
            conn.execute(delete(calls).where(calls.c.call_sid.in_(sids)))
            counts["export_lines"] = _remove_from_exports(conn, set(sids))
        return counts

    def _fold_wal(self) -> None:
        if self.engine.dialect.name == "sqlite":
            # Deleted rows still sit in the write-ahead log until a checkpoint: fold it in and truncate it.
            # secure_delete has zeroed the freed pages; VACUUM rebuilds the file without them.
            with self.engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                if busy is not None and busy[0]:
                    log.warning("erasure: the write-ahead log is in use and could not be truncated yet")
            try:
                with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM")
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            except OperationalError as exc:
                log.warning("erasure: VACUUM could not run now (%s); freed pages are zeroed", type(exc.orig).__name__)

    # -- exports ----------------------------------------------------------------------------
    def record_export(self, *, kind: str, path: str, call_sids: list[str], actor: str) -> None:
        """Tracks a file written from call records (audited), so erasure and purge can reach into it."""
        with self.engine.begin() as conn:
            conn.execute(insert(exports).values(at=utcnow(), kind=kind, path=path, call_sids=call_sids))
            self._append_audit(
                conn, actor=actor, action="export", subject=kind, details={"path": path, "calls": len(call_sids)}
            )

    def count(self, table: Table) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


class AsyncStorage:
    """Runs Storage methods on one dedicated thread: ordered writes, a free event loop.

    Calls go through one bounded, ordered `StorageQueue`: awaited ones time out, and writes wait out a database
    outage in its spool (see `ivr.storage_queue`).
    """

    def __init__(
        self, storage: Storage, config: StorageConfig | None = None, *, spool_path: Path | None = None
    ) -> None:
        self.sync = storage
        self.config = config or StorageConfig()
        self.on_error: Callable[[str, BaseException], None] | None = None
        self.queue = StorageQueue(self.config, on_error=self._outage)
        self.spool_path = spool_path if self.config.spool_file else None
        self._thread: threading.Thread | None = None
        self._closing = False
        if self.spool_path is not None:
            saved = load_spool(self.spool_path, storage)
            if saved:
                log.warning("replaying %d writes spooled by the previous process", len(saved))
            for call in saved:
                self.queue.put(call)

    @property
    def available(self) -> bool:
        """False while writes are held in the spool for a database that is down."""
        return not self.queue.in_outage

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Awaits a storage call, in order behind queued writes. `StorageUnavailable` at once while the
        database is down, or after `timeout_s` when it is slow (a call that never started is then dropped)."""
        if self.queue.in_outage:
            raise StorageUnavailable(f"database unavailable ({self.queue.pending} writes spooled)")
        future = self._put(fn, args, kwargs, spool=False)
        try:
            return cast(T, await asyncio.wait_for(asyncio.wrap_future(future), self.config.timeout_s))
        except TimeoutError:
            name = getattr(fn, "__name__", "call")
            raise StorageUnavailable(f"storage did not answer {name} within {self.config.timeout_s:g} s") from None

    async def stored(self, future: Future[T]) -> T | None:
        """A submitted write's result, or None while it waits in the spool (database down, or slower than
        `timeout_s`): it is then written later, in order. A write the database refused raises its error."""
        if not future.done():
            if self.queue.in_outage:
                return None
            waited = asyncio.wrap_future(future)
            waited.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                return await asyncio.wait_for(asyncio.shield(waited), self.config.timeout_s)
            except TimeoutError:
                return None
        return future.result()

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Queues a write without waiting for it: ordered, kept through an outage; a failure is logged with its
        call id, never lost silently. The future resolves once it is written (`stored`)."""

        call_sid = _call_sid_of(fn, args, kwargs)

        def done(fut: Future[T]) -> None:
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is not None:
                # Never the bound values (transcripts, numbers): the call id, the operation and the error kind.
                log.error(
                    "storage write %s failed: %s",
                    fn.__name__,
                    describe_db_error(exc),
                    extra={"call_sid": call_sid or "-"},
                    exc_info=None if isinstance(exc, StatementError) else exc,
                )
                if self.on_error is not None:
                    self.on_error(fn.__name__, exc)

        future: Future[T] = self._put(fn, args, kwargs, spool=True)
        future.add_done_callback(done)
        return future

    def _put(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, spool: bool
    ) -> Future[Any]:
        if self._closing:
            refused: Future[Any] = Future()
            refused.set_exception(StorageUnavailable("storage is closed"))
            return refused
        future = self.queue.put(StorageCall(fn, args, dict(kwargs), spool))
        self._wake()
        return future

    def _outage(self, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(kind, StorageUnavailable(kind))

    # The storage thread (tests work through the queue on the loop instead: `_wake` is their seam).
    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="ivr-db", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        queue = self.queue
        while True:
            with queue.cond:
                while not queue.pending and not self._closing:
                    queue.cond.wait()
                if self._closing:
                    return
            delay = queue.drain()
            if delay is not None:
                # Down: retry after `delay` (new writes join the spool meanwhile, they do not hurry it).
                until = time.monotonic() + delay
                with queue.cond:
                    while not self._closing and (left := until - time.monotonic()) > 0:
                        queue.cond.wait(left)

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
        node_id: str | None = None,
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
            node_id=node_id,
        )

    async def update_call(self, call_sid: str, **values: Any) -> None:
        await self.run(self.sync.update_call, call_sid, **values)

    async def end_call(self, call_sid: str, *, reason: str, outcome: str, ended_at: datetime | None = None) -> None:
        await self.run(self.sync.end_call, call_sid, reason=reason, outcome=outcome, ended_at=ended_at)

    async def close_open_calls(self, reason: str, node_id: str | None) -> int:
        return await self.run(self.sync.close_open_calls, reason, node_id)

    async def open_call_owners(self) -> set[str | None]:
        return await self.run(self.sync.open_call_owners)

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

    async def erase(
        self, request: ErasureRequest, *, actor: str, in_memory: dict[str, int] | None = None
    ) -> dict[str, int]:
        return await self.run(self.sync.erase, request, actor=actor, in_memory=in_memory)

    async def purge(self, privacy: PrivacyConfig, *, actor: str) -> dict[str, int]:
        return await self.run(self.sync.purge, privacy, actor=actor)

    async def verify_audit(self) -> AuditVerification:
        return await self.run(self.sync.verify_audit)

    async def count(self, table: Table) -> int:
        return await self.run(self.sync.count, table)

    def close(self, timeout_s: float | None = None) -> None:
        """Lets queued writes finish (up to `timeout_s`, not while the database is down), then stops. Writes
        still waiting are saved to the spool file for the next process, or reported lost; a hung database
        call is left behind on its (daemon) thread rather than holding up shutdown."""
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        while self.queue.pending and not self.queue.in_outage and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.queue.cond:
            self._closing = True
            self.queue.cond.notify_all()
        left = self.queue.take_spoolable()
        if left:
            saved = save_spool(self.spool_path, left, self.sync) if self.spool_path is not None else 0
            if saved:
                log.warning("%d unwritten writes saved to %s for the next start", saved, self.spool_path)
            if saved < len(left):
                log.error("storage closed with %d writes never written: lost", len(left) - saved)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.error("storage thread still waiting on the database at shutdown: left behind")
        self.sync.dispose()


def describe_db_error(exc: BaseException) -> str:
    """An error as a log line may show it: for a database error the driver's error class, SQLSTATE and
    the constraint or table it names, never a value (PostgreSQL's DETAIL quotes the offending key)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        orig = exc.orig
        diag = getattr(orig, "diag", None)
        parts = [type(orig).__name__]
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate:
            parts.append(f"sqlstate {sqlstate}")
        for attr in ("constraint_name", "table_name", "column_name"):
            value = getattr(diag, attr, None) if diag is not None else None
            if value:
                parts.append(f"{attr.split('_')[0]} {value}")
        if diag is None:  # SQLite's messages name tables and columns, not values
            parts.append(str(orig).splitlines()[0][:200])
        return ", ".join(parts)
    if isinstance(exc, StatementError):
        return type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _call_sid_of(fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The call id among a storage method's arguments (its first parameter is named call_sid), if any."""
    if "call_sid" in kwargs:
        return str(kwargs["call_sid"])
    try:
        first = next(iter(pyinspect.signature(fn).parameters), None)
    except (TypeError, ValueError):
        return None
    return str(args[0]) if first == "call_sid" and args else None


def audit_hash(prev_hash: str, at: datetime, actor: str, action: str, subject: str, details: dict[str, Any]) -> str:
    """sha256 of the previous row's hash and this row's content (time in UTC to the microsecond)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    content = json.dumps(
        [at.astimezone(UTC).isoformat(timespec="microseconds"), actor, action, subject, details],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + "\n" + content).encode("utf-8")).hexdigest()


def _remove_from_exports(conn: Connection, sids: set[str]) -> int:
    """Takes the given calls out of every tracked export file (JSON lines with a call_sid); returns lines removed."""
    removed = 0
    for row in conn.execute(select(exports.c.id, exports.c.path, exports.c.call_sids)).mappings():
        listed = row["call_sids"]
        if isinstance(listed, (bytes, bytearray, str)):
            listed = json.loads(listed)
        if not sids.intersection(listed):
            continue
        path = Path(row["path"])
        if path.exists():
            kept: list[str] = []
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        sid = json.loads(line).get("call_sid")
                    except ValueError:
                        sid = None
                    if sid in sids:
                        removed += 1
                    else:
                        kept.append(line)
            tmp = path.with_name(path.name + ".erase-tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
        conn.execute(
            update(exports).where(exports.c.id == row["id"]).values(call_sids=[s for s in listed if s not in sids])
        )
    return removed


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
