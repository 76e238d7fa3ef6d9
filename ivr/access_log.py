"""Keeps credentials out of log lines: the aiohttp access log and, as a logging filter, every other line.

Whatever a client puts in a URL is redacted before it is written: query values whose name says token,
ticket, key, signature, secret or password (`?token=abc` -> `?token=[redacted]`), the secret path
segment of a callback link (`/callback/<token>` -> `/callback/[redacted]`) and `Bearer <token>`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from flows.pci import mask_card_numbers

REDACTED = "[redacted]"

_SECRET_QUERY = re.compile(
    r"(?P<name>(?:^|(?<=[?&;\s\"']))(?:[\w.\-]*[_.\-])?(?:token|ticket|key|signature|secret|password|sig)=)"
    r"(?P<value>[^&;#\s\"']*)",
    re.IGNORECASE,
)
_CALLBACK_PATH = re.compile(r"(?P<prefix>/callback/)(?P<value>[^/?#\s\"']+)")
_BEARER = re.compile(r"(?P<prefix>\bBearer\s+)(?P<value>[^\s\"',]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL credential replaced by [redacted]."""
    if not text:
        return text
    text = _SECRET_QUERY.sub(lambda m: m.group("name") + (REDACTED if m.group("value") else ""), text)
    text = _CALLBACK_PATH.sub(lambda m: m.group("prefix") + REDACTED, text)
    return _BEARER.sub(lambda m: m.group("prefix") + REDACTED, text)


class RedactingAccessLogger(AccessLogger):
    """aiohttp's access log (same format) with credentials redacted from the request line and headers."""

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        return [
            (key, redact(value) if isinstance(value, str) else value)
            for key, value in super()._format_line(request, response, time)
        ]


class PrivateDataFilter(logging.Filter):
    """A handler filter, so it sees records propagated from every logger: no URL credential and no card
    number (PCI) in any line, whatever logged it: the message with its arguments, the traceback, the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is still logged, as logging itself would
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def scrub(text: str) -> str:
    return redact(mask_card_numbers(text))
