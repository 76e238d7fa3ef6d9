"""GDPR erasure is a command: it removes a customer's calls and transcripts and leaves an audit entry."""

from __future__ import annotations

import json
import subprocess
import sys

from ivr.storage import Storage, audit_log


def test_erase_command_deletes_the_customers_records_and_audits_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'ivr.sqlite3'}"
    storage = Storage(url)
    storage.create_all()
    for sid, customer in (("CA1", "C1001"), ("CA2", "C1001"), ("CA3", "C2002")):
        storage.start_call(sid, stream_sid="MZ" + sid, caller="+14155550100", params={})
        storage.update_call(sid, customer_id=customer)
        storage.add_turn(sid, idx=0, channel="voice", text=f"my secret story {sid}")
        storage.add_event(sid, "utterance", {"duration_s": 1.0})
        storage.end_call(sid, reason="caller_hung_up", outcome="abandoned")
    storage.add_escalation(
        "CA1",
        trigger="legal",
        reason="Customer mentioned 'sue'",
        queue="general",
        priority=1,
        payload={"last_3_messages": ["my secret story CA1"]},
    )
    storage.add_callback(
        call_sid="CA2", customer_id="C1001", phone="+14155550100", token="t1", idempotency_key="CA2:callback"
    )

    env_db = {"IVR_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "erase", "--customer", "C1001", "--actor", "dpo@example"],
        capture_output=True,
        text=True,
        env=env_db,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["erased"]["calls"] == 2

    assert [c["call_sid"] for c in storage.list_calls()] == ["CA3"]
    storage.dispose()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("ivr.sqlite3")]
    raw = b"".join(p.read_bytes() for p in files)
    assert b"my secret story CA3" in raw  # the other customer's data is still there, as text
    assert b"my secret story CA1" not in raw and b"my secret story CA2" not in raw  # not even in freed pages
    assert storage.list_escalations() == [] and storage.list_callbacks() == []
    entries = storage.list_audit()
    assert [(e["actor"], e["action"], e["subject"]) for e in entries] == [("dpo@example", "erase_customer", "C1001")]
    assert entries[0]["details"]["turns"] == 2
    assert "secret" not in json.dumps(entries)
    # The audit log itself cannot be rewritten.
    try:
        with storage.engine.begin() as conn:
            conn.execute(audit_log.delete())
        raise AssertionError("audit log rows could be deleted")
    except Exception as exc:  # noqa: BLE001
        assert "append-only" in str(exc)
