"""Agents as identities: accounts, how each is reached, desk logins, status, and the legs of their calls.

An agent account is made by an administrator (`ivr agents add`); the agent logs in on the desk with
their name and password and gets a session token that is good for the desk only (the admin API token
stays for the records API). Status is one of available, busy, wrap_up, away: only an available agent
is offered callers and may accept one; accepting makes them busy, the end of the call wrap_up, the
wrap-up available again. An agent who lets a transfer ring out is paused (away, with the reason), as
Asterisk's app_queue pauses a member who does not answer.

Functions here take the synchronous `Storage` and run on the storage thread (`AsyncStorage.run`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

import phonenumbers
from pydantic import BaseModel, Field
from sqlalchemy import and_, delete, insert, select, update

from ivr.storage import Storage, agent_legs, agent_sessions, agents, escalations

AgentStatus = Literal["available", "busy", "wrap_up", "away"]
STATUSES: tuple[AgentStatus, ...] = ("available", "busy", "wrap_up", "away")
# Dial outcomes (Twilio's DialCallStatus) that put the caller back at the head of the queue.
MISSED = ("no-answer", "busy", "failed", "canceled")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class DeskConfig(BaseModel):
    """The agent desk's options (`IVR_DESK__...`)."""

    session_ttl_s: float = Field(12 * 3600.0, gt=0, description="how long a desk login lasts")
    ring_timeout_s: int = Field(20, ge=5, le=120, description="how long an agent's phone rings before no-answer")
    sla_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 60.0},
        description="per queue: answer within this many seconds (the wait turns amber at half, red past it)",
    )
    company_name: str = Field("Open IVR", description="named in the brief an agent hears before the bridge")
    wrap_up_limit_s: float | None = Field(
        300.0, gt=0, description="an agent still in wrap-up after this long is made available again (None: never)"
    )

    def sla_for(self, queue: str) -> float:
        return self.sla_s.get(queue, self.sla_s.get("default", 60.0))


class AgentRow(TypedDict):
    name: str
    display_name: str
    reach: str
    status: str
    status_reason: str | None
    status_since: str


class LegRow(TypedDict):
    id: int
    escalation_id: int
    call_sid: str
    agent: str
    reach: str
    status: str
    dialled_at: str
    answered_at: str | None
    ended_at: str | None
    talk_s: float | None
    disposition: str | None
    notes: str | None
    wrapped_at: str | None
    crm_status: str | None


class AgentExists(ValueError):
    pass


@dataclass(frozen=True)
class Reach:
    """Where an agent's calls go: a phone number, a SIP URI, or a Twilio Client (browser/app) identity."""

    kind: Literal["number", "sip", "client"]
    address: str

    @classmethod
    def parse(cls, text: str) -> Reach:
        value = text.strip()
        if value.lower().startswith("sip:"):
            if "@" not in value or len(value) > 256 or any(c.isspace() for c in value):
                raise ValueError(f"not a SIP URI: {value!r} (expected sip:user@host)")
            return cls("sip", "sip:" + value[4:])
        if value.lower().startswith("client:"):
            identity = value[7:]
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,121}", identity):
                raise ValueError(f"not a Twilio Client identity: {identity!r} (letters, digits, _ . -)")
            return cls("client", identity)
        try:
            number = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            raise ValueError(
                f"not a phone number in +E.164 form, sip:user@host or client:identity: {value!r}"
            ) from None
        if not phonenumbers.is_possible_number(number):
            raise ValueError(f"not a possible phone number: {value!r}")
        return cls("number", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

    def __str__(self) -> str:
        return f"client:{self.address}" if self.kind == "client" else self.address


# -- passwords and session tokens -------------------------------------------------------------
def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# -- accounts (on the storage thread) ---------------------------------------------------------
def _agent_row(row: Any) -> AgentRow:
    return {
        "name": row["name"],
        "display_name": row["display_name"],
        "reach": row["reach"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "status_since": _iso(row["status_since"]) or "",
    }


def add_agent(
    storage: Storage, name: str, *, display_name: str, reach: Reach, password: str, now: datetime
) -> AgentRow:
    if not NAME_RE.match(name):
        raise ValueError("agent name: lower-case letters, digits, '.', '_' or '-', at most 64 characters")
    if len(password) < 10:
        raise ValueError("password: at least 10 characters")
    with storage.engine.begin() as conn:
        if conn.execute(select(agents.c.name).where(agents.c.name == name)).first() is not None:
            raise AgentExists(f"agent {name!r} already exists")
        conn.execute(
            insert(agents).values(
                name=name,
                display_name=display_name.strip() or name,
                reach=str(reach),
                password_hash=hash_password(password),
                status="away",
                status_since=now,
                created_at=now,
            )
        )
    agent = get_agent(storage, name)
    assert agent is not None
    return agent


def get_agent(storage: Storage, name: str) -> AgentRow | None:
    with storage.engine.connect() as conn:
        row = conn.execute(select(agents).where(agents.c.name == name)).mappings().first()
    return None if row is None else _agent_row(row)


def list_agents(storage: Storage) -> list[AgentRow]:
    with storage.engine.connect() as conn:
        return [_agent_row(r) for r in conn.execute(select(agents).order_by(agents.c.name)).mappings()]


def set_status(
    storage: Storage, name: str, status: AgentStatus, *, now: datetime, reason: str | None = None, only_from: str = ""
) -> bool:
    """Sets an agent's status; with `only_from`, only if the agent is in that status now (compare-and-set)."""
    where = [agents.c.name == name]
    if only_from:
        where.append(agents.c.status == only_from)
    with storage.engine.begin() as conn:
        result = conn.execute(
            update(agents).where(and_(*where)).values(status=status, status_reason=reason, status_since=now)
        )
    return (result.rowcount or 0) == 1


def end_overdue_wrap_ups(storage: Storage, *, now: datetime, limit_s: float) -> list[str]:
    """Agents in wrap-up for longer than the limit become available (Asterisk's wrapuptime); returns their names."""
    cutoff = now - timedelta(seconds=limit_s)
    with storage.engine.begin() as conn:
        names = [
            r[0]
            for r in conn.execute(
                select(agents.c.name).where(agents.c.status == "wrap_up", agents.c.status_since < cutoff)
            )
        ]
        if names:
            conn.execute(
                update(agents)
                .where(agents.c.name.in_(names), agents.c.status == "wrap_up")
                .values(status="available", status_reason="wrap-up time is over", status_since=now)
            )
    return names


def login(storage: Storage, name: str, password: str, *, now: datetime, ttl_s: float) -> tuple[str, AgentRow] | None:
    """A session token for the desk, or None for a wrong name or password (the same answer for both)."""
    with storage.engine.begin() as conn:
        row = conn.execute(select(agents).where(agents.c.name == name)).mappings().first()
        if row is None:
            password_matches(password, hash_password("timing-equaliser"))  # same work for an unknown name
            return None
        if not password_matches(password, row["password_hash"]):
            return None
        token = secrets.token_urlsafe(32)
        conn.execute(delete(agent_sessions).where(agent_sessions.c.expires_at < now))
        conn.execute(
            insert(agent_sessions).values(
                token_hash=token_hash(token), agent=name, created_at=now, expires_at=now + timedelta(seconds=ttl_s)
            )
        )
    return token, _agent_row(row)


def agent_for_token(storage: Storage, token: str, *, now: datetime) -> AgentRow | None:
    with storage.engine.connect() as conn:
        row = (
            conn.execute(
                select(agents)
                .join(agent_sessions, agent_sessions.c.agent == agents.c.name)
                .where(agent_sessions.c.token_hash == token_hash(token), agent_sessions.c.expires_at > now)
            )
            .mappings()
            .first()
        )
    return None if row is None else _agent_row(row)


def logout(storage: Storage, token: str) -> None:
    with storage.engine.begin() as conn:
        conn.execute(delete(agent_sessions).where(agent_sessions.c.token_hash == token_hash(token)))


# -- legs: one dial of a caller to an agent ---------------------------------------------------
def _leg_row(row: Any) -> LegRow:
    return {
        "id": row["id"],
        "escalation_id": row["escalation_id"],
        "call_sid": row["call_sid"],
        "agent": row["agent"],
        "reach": row["reach"],
        "status": row["status"],
        "dialled_at": _iso(row["dialled_at"]) or "",
        "answered_at": _iso(row["answered_at"]),
        "ended_at": _iso(row["ended_at"]),
        "talk_s": row["talk_s"],
        "disposition": row["disposition"],
        "notes": row["notes"],
        "wrapped_at": _iso(row["wrapped_at"]),
        "crm_status": row["crm_status"],
    }


def add_leg(storage: Storage, escalation_id: int, call_sid: str, agent: str, reach: str, *, now: datetime) -> int:
    with storage.engine.begin() as conn:
        result = conn.execute(
            insert(agent_legs).values(
                escalation_id=escalation_id,
                call_sid=call_sid,
                agent=agent,
                reach=reach,
                status="ringing",
                dialled_at=now,
            )
        )
        key = result.inserted_primary_key
        return int(key[0]) if key else 0


def update_leg(storage: Storage, leg_id: int, **values: Any) -> None:
    with storage.engine.begin() as conn:
        conn.execute(update(agent_legs).where(agent_legs.c.id == leg_id).values(**values))


def get_leg(storage: Storage, leg_id: int) -> LegRow | None:
    with storage.engine.connect() as conn:
        row = conn.execute(select(agent_legs).where(agent_legs.c.id == leg_id)).mappings().first()
    return None if row is None else _leg_row(row)


def legs_of(storage: Storage, escalation_ids: list[int]) -> dict[int, list[LegRow]]:
    """escalation id -> its legs, oldest first."""
    if not escalation_ids:
        return {}
    out: dict[int, list[LegRow]] = {}
    with storage.engine.connect() as conn:
        rows = conn.execute(
            select(agent_legs).where(agent_legs.c.escalation_id.in_(escalation_ids)).order_by(agent_legs.c.id)
        ).mappings()
        for row in rows:
            out.setdefault(row["escalation_id"], []).append(_leg_row(row))
    return out


def open_leg_of(storage: Storage, agent: str) -> LegRow | None:
    """The agent's current leg: ringing, on the call, or ended and not yet wrapped up."""
    with storage.engine.connect() as conn:
        row = (
            conn.execute(
                select(agent_legs)
                .where(
                    agent_legs.c.agent == agent,
                    agent_legs.c.wrapped_at.is_(None),
                    agent_legs.c.status.in_(("ringing", "answered", "completed")),
                )
                .order_by(agent_legs.c.id.desc())
            )
            .mappings()
            .first()
        )
    return None if row is None else _leg_row(row)


def abandon_waiting(storage: Storage, call_sid: str) -> list[int]:
    """The caller hung up: their waiting escalations become abandoned. Returns the ids that changed."""
    with storage.engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                select(escalations.c.id).where(escalations.c.call_sid == call_sid, escalations.c.status == "waiting")
            )
        ]
        if ids:
            conn.execute(
                update(escalations)
                .where(escalations.c.id.in_(ids), escalations.c.status == "waiting")
                .values(status="abandoned")
            )
    return ids


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()  # SQLite returns naive UTC
