"""Faults a test can cause in real components (not mocks of ours): a database that refuses every write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from ivr.storage import Storage


def database_down(storage: Storage) -> Callable[[], None]:
    """Makes the database refuse every write from now on, as a full disk or a lost primary does (SQLite:
    `query_only` on each new connection); returns what brings it back."""

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only=ON")

    event.listen(storage.engine, "connect", read_only)
    storage.engine.dispose()

    def back() -> None:
        event.remove(storage.engine, "connect", read_only)
        storage.engine.dispose()

    return back
