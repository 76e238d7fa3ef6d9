"""What `ivr serve` writes to its log: credentials a client put in a URL or header are redacted in every line."""

from __future__ import annotations

import logging

import pytest

from ivr.access_log import redact
from ivr.cli import setup_logging


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '"GET /api/agent/ws?token=s3cr3t&skill=billing HTTP/1.1"',
            '"GET /api/agent/ws?token=[redacted]&skill=billing HTTP/1.1"',
        ),
        ("GET /api/agent/ws?skill=x&ticket=abc", "GET /api/agent/ws?skill=x&ticket=[redacted]"),
        (
            "GET /x?api_key=k1&X-Amz-Signature=s1&Token=t1",
            "GET /x?api_key=[redacted]&X-Amz-Signature=[redacted]&Token=[redacted]",
        ),
        ("POST /callback/Zq0_-abc HTTP/1.1", "POST /callback/[redacted] HTTP/1.1"),
        ("GET /callback/Zq0?x=1", "GET /callback/[redacted]?x=1"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
        ("monkey=3 keyboard=4 skill=billing", "monkey=3 keyboard=4 skill=billing"),
    ],
)
def test_redact(line: str, expected: str):
    assert redact(line) == expected


def test_every_log_line_of_the_server_is_redacted(capsys):
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        logging.getLogger("aiohttp.server").error("bad request: GET /callback/%s?token=%s", "cb-secret", "api-secret")
        logging.getLogger("ivr.app").warning("header was %r", "Bearer bearer-secret")
        logging.getLogger("ivr.app").info("call %s: plain line", "CA1")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "call CA1: plain line" in err and err.count("[redacted]") == 3
    assert not any(s in err for s in ("cb-secret", "api-secret", "bearer-secret"))
