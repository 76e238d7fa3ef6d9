"""What `ivr serve` writes to its log: a card number is masked in every line, whoever logged it and however."""

from __future__ import annotations

import logging

from flows.pci import CARD_MASK
from ivr.cli import setup_logging

CARD = "4556012345677004"  # a valid check digit


def test_no_line_of_the_server_log_holds_a_card_number(capsys):
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("INFO")
        logging.getLogger("ivr.session").warning("asr_failed: transcript %r", f"my card is {CARD}")
        logging.getLogger("aiohttp.access").info("GET /x?n=%s HTTP/1.1", "4556-0123-4567-7004")
        try:
            raise RuntimeError(f"backend refused card {CARD}")
        except RuntimeError:
            logging.getLogger("ivr.app").exception("call %s: lookup failed", "CA1")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "call CA1: lookup failed" in err and "RuntimeError" in err
    assert err.count(CARD_MASK) == 3
    assert CARD[:12] not in err.replace("-", "").replace(" ", "")
