"""A database that hangs, on the real storage thread and in real time (short): SIGTERM still drains within its
deadline, storage calls time out instead of waiting forever, a full queue refuses writes without blocking the
loop, and what the database never got is saved and written by the next start."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.app import build_app, drain
from ivr.storage import AsyncStorage, Storage
from ivr.storage_queue import SPOOL_FILE, StorageConfig, StorageUnavailable
from tests.helpers.virtual_call import UNKNOWN, build_harness


@pytest.fixture
def write_lock() -> Iterator[list[sqlite3.Connection]]:
    """`lock(path)`: another process takes the database's write lock and keeps it: every write hangs."""
    held: list[sqlite3.Connection] = []
    yield held
    for conn in held:
        conn.rollback()
        conn.close()


def hold_write_lock(path: Path, held: list[sqlite3.Connection]) -> None:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    held.append(conn)


async def test_sigterm_drains_within_its_deadline_with_a_hung_database_and_the_next_start_writes_the_rest(
    tmp_path: Path, write_lock: list[sqlite3.Connection]
) -> None:
    data_dir = tmp_path / "data"
    h = await build_harness(data_dir, threaded_storage=True, storage=StorageConfig(timeout_s=0.5, retry_s=0.2))
    app = build_app(h.services)
    call = await h.call(UNKNOWN).start()
    await call.wait(0.5)
    await call.press("4")
    await call.wait(0.3)

    hold_write_lock(data_dir / "ivr.sqlite3", write_lock)
    await call.press("0")  # writes now queue behind one that hangs
    await call.wait(0.3)
    started = time.monotonic()
    remaining = await asyncio.wait_for(drain(app, deadline_s=0.5), 10.0)
    assert remaining == 1 and time.monotonic() - started < 2.0
    assert call.session.end_reason == "server_shutdown" and h.services.sessions == {}
    assert h.metric("ivr_active_calls") == 0
    with pytest.raises(StorageUnavailable):  # a read gives up rather than hang
        await call.finish()
    started = time.monotonic()
    await h.services.close()
    assert time.monotonic() - started < 2.0
    assert (data_dir / SPOOL_FILE).exists()

    # The next start, with the database back, writes what the hung one never got.
    write_lock.pop().rollback()
    storage = Storage(f"sqlite:///{data_dir / 'ivr.sqlite3'}")
    db = AsyncStorage(storage, StorageConfig(timeout_s=30.0), spool_path=data_dir / SPOOL_FILE)
    try:
        record = await db.get_call(call.call_sid)
    finally:
        await asyncio.to_thread(db.close)
    assert record["end_reason"] == "server_shutdown" and record["ended_at"]
    assert not (data_dir / SPOOL_FILE).exists()


async def test_a_full_storage_queue_refuses_writes_at_once_and_calls_time_out(
    tmp_path: Path, write_lock: list[sqlite3.Connection]
) -> None:
    path = tmp_path / "ivr.sqlite3"
    storage = Storage(f"sqlite:///{path}")
    storage.create_all()
    db = AsyncStorage(storage, StorageConfig(max_pending=5, timeout_s=0.3, spool_file=False))
    refusals: list[str] = []
    db.on_error = lambda op, exc: refusals.append(op)
    hold_write_lock(path, write_lock)

    accepted = [db.submit(storage.audit, actor="test", action="x", subject=str(n)) for n in range(4)]
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):  # behind a write that hangs: gives up after timeout_s
        await db.run(storage.list_calls)
    assert 0.3 <= time.monotonic() - started < 1.0

    started = time.monotonic()
    more = [db.submit(storage.audit, actor="test", action="x", subject=str(n)) for n in range(4, 10)]
    assert time.monotonic() - started < 0.1  # the loop never waits on a full queue
    assert all(isinstance(f.exception(timeout=0), StorageUnavailable) for f in more)
    assert refusals == ["audit"] * 6

    write_lock.pop().rollback()
    await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in accepted)), 40.0)
    assert [row["subject"] for row in await db.list_audit()] == ["0", "1", "2", "3"]
    await asyncio.to_thread(db.close)
