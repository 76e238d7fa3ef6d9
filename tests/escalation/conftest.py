"""Fixtures for the escalation, handoff and report tests: storage on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The repo root (``ivr``, ``flows``) and this folder (``escalation_script``) must be importable however
# pytest is started; the project is not pip-installed into the venv.
for _p in (Path(__file__).resolve().parents[2], Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from ivr.storage import Storage  # noqa: E402


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path):
    """Empty call records, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        store = Storage(f"sqlite:///{tmp_path / 'ivr.sqlite3'}")
    else:
        store = Storage(request.getfixturevalue("pg_url"))
        store.drop_all()
    store.create_all()
    try:
        yield store
    finally:
        if request.param == "postgres":
            store.drop_all()
        store.dispose()
