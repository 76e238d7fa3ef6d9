"""A call id comes from the carrier's start message: whatever it holds, it cannot forge log lines."""

from __future__ import annotations

import logging

from ivr.call_log import printable


def test_a_call_id_with_line_breaks_cannot_start_a_new_log_line(caplog):
    forged = "CA1\n2026-11-28 00:00:00 INFO ivr.auth [-] admin logged in"
    caplog.set_level(logging.INFO)
    logging.getLogger("test").info("call started", extra={"call_sid": printable(forged)})
    (record,) = caplog.records
    assert "\n" not in record.call_sid and record.call_sid.startswith("CA1?")


def test_a_huge_call_id_is_cut_in_logs():
    assert len(printable("CA" + "f" * 10_000)) <= 67
