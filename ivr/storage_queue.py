"""The storage thread's queue: ordered calls, timeouts, backpressure, and a spool that outlives an outage.

Every storage call (a write fired and forgotten, a read or write awaited) joins one ordered queue served by one
thread, so a call's records stay in order and the event loop never waits on the database.

When the database fails with an outage (unreachable, read-only, locked, a pool timeout), a write that may be
spooled stays at the head of the queue and is retried every `retry_s`; the writes behind it wait in order (the
spool) and are replayed in order once the database is back. Reads and other awaited calls fail at once with
`StorageUnavailable` during an outage, and after `timeout_s` when the database is merely slow. The queue is
bounded (`max_pending`): beyond it a write is refused, counted and logged with its call id, and the loop never
blocks. Writes still spooled at shutdown are saved to `spool.jsonl` under the data directory (when
`spool_file` is on) and replayed, first, by the next process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("ivr.storage")

SPOOL_FILE = "spool.jsonl"


class StorageConfig(BaseModel):
    """`Settings.storage` (``IVR_STORAGE__...``)."""

    timeout_s: float = Field(5.0, description="an awaited storage call gives up after this long")
    retry_s: float = Field(2.0, description="how often spooled writes retry a database that is down")
    max_pending: int = Field(10_000, description="writes queued or spooled at once; beyond it new writes are refused")
    spool_file: bool = Field(
        True, description="save writes still spooled at shutdown under data_dir, replayed at start"
    )


class StorageUnavailable(RuntimeError):
    """The database is down, or did not answer within the timeout."""


def is_outage(exc: BaseException) -> bool:
    """A failure of the database rather than of the statement: worth waiting out."""
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout) or bool(
        getattr(exc, "connection_invalidated", False)
    )


@dataclass(eq=False)
class StorageCall:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    spool: bool  # a write that waits out an outage instead of failing
    future: Future[Any] = field(default_factory=Future)
    started: bool = False  # tried at least once (a spooled write is retried with the same future)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "call")

    @property
    def call_id(self) -> str:
        first = self.args[0] if self.args else self.kwargs.get("call_sid")
        return first if isinstance(first, str) else "-"


class StorageQueue:
    """The ordered queue one storage thread (or, in tests, the loop itself) works through with `drain`."""

    def __init__(self, config: StorageConfig, *, on_error: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_error = on_error
        self.cond = threading.Condition()
        self._items: deque[StorageCall] = deque()
        self._draining = False
        self.outage_since: float | None = None  # time.monotonic() of the first failure of this outage
        self.spooled = 0  # writes that waited out an outage (replayed or still waiting)
        self.refused = 0

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def in_outage(self) -> bool:
        return self.outage_since is not None

    def put(self, call: StorageCall) -> Future[Any]:
        """Queues a call; never blocks. A full queue refuses it (the future fails with StorageUnavailable)."""
        with self.cond:
            if len(self._items) >= self.config.max_pending:
                self.refused += 1  # the caller's done-callback logs it with the call id
                call.future.set_exception(StorageUnavailable(f"storage queue full ({len(self._items)} pending)"))
                return call.future
            if self.in_outage and call.spool:
                self.spooled += 1
            self._items.append(call)
            self.cond.notify()
        return call.future

    def drain(self) -> float | None:
        """Runs queued calls in order until none is left (None) or an outage holds a write (the retry delay)."""
        with self.cond:
            if self._draining:
                return None
            self._draining = True
        try:
            while True:
                with self.cond:
                    if not self._items:
                        return None
                    call = self._items[0]
                if not call.started:
                    call.started = True
                    if not call.future.set_running_or_notify_cancel():
                        self._pop(call)  # its caller gave up before it started
                        continue
                try:
                    result = call.fn(*call.args, **call.kwargs)
                except Exception as exc:  # noqa: BLE001 - classified, logged with the call id, never lost
                    if is_outage(exc) and call.spool:
                        self._outage(call, exc)
                        return self.config.retry_s  # it stays at the head, the rest behind it
                    self._pop(call)
                    if is_outage(exc):
                        call.future.set_exception(StorageUnavailable(f"database unavailable: {type(exc).__name__}"))
                    else:
                        call.future.set_exception(exc)  # logged by whoever waits or submitted it
                    continue
                self._pop(call)
                call.future.set_result(result)
                if self.outage_since is not None:
                    down = time.monotonic() - self.outage_since
                    self.outage_since = None
                    log.warning("database back after %.1f s: replaying spooled writes in order", down)
        finally:
            with self.cond:
                self._draining = False

    def take_spoolable(self) -> list[StorageCall]:
        """Empties the queue (shutdown): the writes that may be saved for the next process, in order."""
        with self.cond:
            items, self._items = list(self._items), deque()
        for call in items:
            if not call.spool:
                call.future.cancel()
        return [c for c in items if c.spool]

    def _pop(self, call: StorageCall) -> None:
        with self.cond:
            if self._items and self._items[0] is call:
                self._items.popleft()

    def _outage(self, call: StorageCall, exc: BaseException) -> None:
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.spooled += len(self._items)
            log.error(
                "call %s: database unavailable (%s in %s): %d writes spooled, retrying every %.1f s",
                call.call_id,
                type(exc).__name__,
                call.name,
                len(self._items),
                self.config.retry_s,
            )
            if self.on_error is not None:
                self.on_error("storage_outage")


# -- the spool file: writes of `Storage` methods, as JSON lines ----------------------------------------------
def save_spool(path: Path, calls: list[StorageCall], owner: object) -> int:
    """Appends the writes that are `owner`'s (the Storage) methods; returns how many were saved."""
    lines = []
    for call in calls:
        if getattr(call.fn, "__self__", None) is not owner:
            log.error("call %s: spooled write %s cannot be saved: lost", call.call_id, call.name)
            continue
        try:
            lines.append(json.dumps({"method": call.name, "args": call.args, "kwargs": call.kwargs}, default=_encode))
        except (TypeError, ValueError) as exc:
            log.error("call %s: spooled write %s cannot be saved (%s): lost", call.call_id, call.name, exc)
    if lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return len(lines)


def load_spool(path: Path, owner: object) -> list[StorageCall]:
    """The writes a previous process saved, in order; the file is removed once read."""
    if not path.exists():
        return []
    calls = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line, object_hook=_decode)
            fn = getattr(owner, entry["method"])
            calls.append(StorageCall(fn, tuple(entry["args"]), dict(entry["kwargs"]), True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("spool file %s line %d unreadable (%s): skipped", path, n, type(exc).__name__)
    path.unlink()
    return calls


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"{type(value).__name__} cannot be spooled")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"$datetime"}:
        return datetime.fromisoformat(obj["$datetime"])
    return obj
