"""Personal data from the operator's side: `ivr erase --phone`, `ivr purge`, `ivr audit verify` on SQLite,
tracked exports, SQL errors logged without values, and in-memory contexts that expire."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from ivr.privacy import ContextStore
from ivr.report import export_retraining_dataset
from ivr.storage import AsyncStorage, Storage, utcnow


def ivr(url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", *args],
        capture_output=True,
        text=True,
        env={"IVR_DATABASE_URL": url, "PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def file_bytes(db_file: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_file.parent.iterdir() if p.name.startswith(db_file.name))


def test_erase_by_phone_reaches_unidentified_open_and_escalated_calls_and_exports(tmp_path):
    db_file = tmp_path / "ivr.sqlite3"
    url = f"sqlite:///{db_file}"
    storage = Storage(url)
    storage.create_all()
    calls = {"CA1": "+14155550199", "CA2": "14155550199", "CA3": "(415) 555-0199", "CA4": "+14155550100"}
    for sid, caller in calls.items():
        storage.start_call(sid, stream_sid="MZ" + sid, caller=caller, params={})
        storage.add_turn(sid, idx=0, channel="voice", text=f"private words {sid}", intent="unknown", confidence=0.2)
    storage.end_call("CA1", reason="caller_hung_up", outcome="abandoned")  # CA2, CA3 stay open (crashed)
    for sid in ("CA2", "CA4"):
        storage.add_escalation(
            sid,
            trigger="low_confidence",
            reason="unclear",
            queue="general",
            priority=1,
            payload={"last_3_messages": [f"private words {sid}"]},
        )
    storage.add_callback(call_sid=None, phone="+14155550199", token="t1", idempotency_key="k1")
    export = tmp_path / "retraining.jsonl"
    assert export_retraining_dataset(storage, export) == 2
    assert "private words CA2" in export.read_text()

    proc = ivr(url, "erase", "--phone", "+1 (415) 555-0199", "--actor", "dpo@example")

    assert proc.returncode == 0, proc.stderr
    erased = json.loads(proc.stdout.strip().splitlines()[-1])["erased"]
    assert erased["calls"] == 3 and erased["callbacks"] == 1 and erased["export_lines"] == 1
    assert [c["call_sid"] for c in storage.list_calls()] == ["CA4"]
    raw = file_bytes(db_file)
    assert b"private words CA4" in raw
    assert not any(f"private words {sid}".encode() in raw for sid in ("CA1", "CA2", "CA3"))
    assert "CA2" not in export.read_text() and "private words CA4" in export.read_text()
    actions = [(a["actor"], a["action"]) for a in storage.list_audit()]
    assert actions == [("report", "export"), ("dpo@example", "erase")]
    # What the entries say (not their chain hashes, whose hex digits can hold "0199" by chance).
    said = [{k: v for k, v in a.items() if k not in ("hash", "prev_hash")} for a in storage.list_audit()]
    assert "0199" not in json.dumps(said)

    assert ivr(url, "erase", "--phone", "not a number").returncode == 2


def test_purge_removes_only_calls_older_than_their_regions_retention(tmp_path):
    url = f"sqlite:///{tmp_path / 'ivr.sqlite3'}"
    storage = Storage(url)
    storage.create_all()
    now = utcnow()
    for sid, region, age_days in (("OLD_US", "us_west", 40), ("NEW_US", "us_west", 5), ("OLD_UK", "uk", 40)):
        storage.start_call(
            sid, stream_sid=None, caller="+14155550100", params={}, region=region, started_at=now - timedelta(age_days)
        )
        storage.add_turn(sid, idx=0, channel="voice", text="hello")

    proc = ivr(
        url, "purge", env={"IVR_PRIVACY__RETENTION_DAYS": "30", "IVR_PRIVACY__RETENTION_DAYS_BY_REGION": '{"uk": 60}'}
    )

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["purged"]["calls"] == 1
    assert sorted(c["call_sid"] for c in storage.list_calls()) == ["NEW_US", "OLD_UK"]
    (entry,) = storage.list_audit()
    assert entry["action"] == "purge" and entry["details"]["calls"] == 1 and entry["details"]["turns"] == 1


def test_audit_verify_passes_on_an_intact_chain_and_names_the_first_tampered_row(tmp_path):
    db_file = tmp_path / "ivr.sqlite3"
    url = f"sqlite:///{db_file}"
    storage = Storage(url)
    storage.create_all()
    for n in range(4):
        storage.audit(actor="alice", action="accept_escalation", subject=f"esc:{n}", details={"n": n})
    storage.dispose()
    assert ivr(url, "audit", "verify").returncode == 0

    with sqlite3.connect(db_file) as raw:  # someone with the file, not the application, rewrites history
        raw.execute("DROP TRIGGER audit_log_no_update")
        raw.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 3")
    proc = ivr(url, "audit", "verify")

    assert proc.returncode == 1
    assert json.loads(proc.stdout)["first_broken_id"] == 3
    assert "row 3" in proc.stderr


async def test_a_failed_write_is_logged_with_its_call_id_and_without_its_values(tmp_path, caplog):
    storage = Storage(f"sqlite:///{tmp_path / 'ivr.sqlite3'}")
    storage.create_all()
    db = AsyncStorage(storage)
    caplog.set_level(logging.ERROR, logger="ivr.storage")
    # No such call: the foreign key refuses the turn.
    future = db.submit(storage.add_turn, "CAnosuchcall", idx=0, channel="voice", text="my secret 4111 story")
    try:
        future.result(timeout=10)
    except Exception:  # noqa: BLE001 (the failure itself is what is logged)
        pass
    db.close()
    lines = [r for r in caplog.records if r.name == "ivr.storage"]
    assert lines, "the failed write was not logged"
    text = "\n".join(caplog.text.splitlines())
    assert "secret" not in text and "4111" not in text
    assert any(getattr(r, "call_sid", None) == "CAnosuchcall" for r in lines)


def test_contexts_kept_in_memory_expire_by_age_and_by_count():
    clock = [0.0]
    store: ContextStore[str] = ContextStore(ttl_s=60, max_items=2, now=lambda: clock[0])
    store["CA1"] = "one"
    clock[0] = 30
    store["CA2"] = "two"
    clock[0] = 61
    assert "CA1" not in store and store.get("CA2") == "two"
    store["CA3"] = "three"
    store["CA4"] = "four"
    assert "CA2" not in store and len(store) == 2
    assert store.remove_where(lambda v: v == "three") == 1 and store.pop("CA4") == "four" and len(store) == 0
