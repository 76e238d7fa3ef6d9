"""Twilio REST calls the server makes: redirect a live call (transfer to an agent), place a call (a booked
callback, with answering-machine detection) and send an SMS.

The official `twilio` library does the wire format; this module adds what a phone server needs
around it: the blocking client runs in a worker thread, transient failures (5xx, connection
errors) are retried with a small bounded backoff, 4xx answers are never retried, and every failure
surfaces as one exception type, `TwilioApiError`, carrying Twilio's error code.

`api_base_url` redirects every request the library makes to another server (tests point it at a
local recorder); the library itself still builds and sends the requests.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

R = TypeVar("R")

# Twilio de-duplicates POSTs that carry the same token for 24 h, so a retry after a 5xx whose
# message actually went out does not text the caller twice. Set per call, read by the HTTP client.
_IDEMPOTENCY_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("twilio_idem", default=None)

# Codes worth naming in messages; anything else is reported with Twilio's own text.
KNOWN_CODES = {
    21211: "invalid 'To' phone number",
    21212: "invalid 'From' phone number",
    21214: "'To' number cannot be reached",
    21220: "call is not in progress (caller hung up?)",
    21408: "permission to send to this region is not enabled",
    21610: "recipient has opted out (STOP)",
    21614: "'To' number is not a mobile number",
    20003: "authentication failed (account SID / auth token)",
    20404: "resource not found",
}


class Transfer(TypedDict):
    """Twilio's answer to a transfer: the call, its status, the TwiML it now runs, and the attempts it took."""

    call_sid: str
    status: str | None
    twiml: str
    attempts: int


class PlacedCall(TypedDict):
    """Twilio's answer to `calls.create`: the new call and its first status."""

    call_sid: str
    status: str | None
    attempts: int


# Twilio's STOP keywords (and the ones that undo them): an inbound SMS with one of these as its whole body.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES", "OPTIN"})


def sms_keyword(body: str) -> str | None:
    """'stop', ' Stop. ' -> 'STOP'; None when the message is not a keyword on its own."""
    word = "".join(ch for ch in body.strip().upper() if ch.isalpha())
    return word if word in OPT_OUT_KEYWORDS | OPT_IN_KEYWORDS and len(body.split()) == 1 else None


class TwilioApiError(Exception):
    """A Twilio REST call failed. `code` is Twilio's error code (e.g. 21211) when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: int | None = None,
        transient: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.transient = transient
        self.attempts = attempts

    def __str__(self) -> str:
        prefix = f"Twilio error {self.code}" if self.code else "Twilio error"
        return f"{prefix}: {self.args[0]}"


class _RedirectingHttpClient(TwilioHttpClient):
    """The library's own requests-based client, with *.twilio.com rewritten to a configured base URL."""

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base_url.rstrip("/")) if base_url else None

    def request(
        self,
        method: str,
        url: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = False,
    ) -> Any:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if self._base is not None and (host == "twilio.com" or host.endswith(".twilio.com")):
            url = urlunsplit(
                (self._base.scheme, self._base.netloc, self._base.path + parts.path, parts.query, parts.fragment)
            )
        token = _IDEMPOTENCY_TOKEN.get()
        if token and method.upper() == "POST":
            headers = dict(headers or {})
            headers["I-Twilio-Idempotency-Token"] = token
        return super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


class TwilioRest:
    def __init__(
        self,
        account_sid: str,
        auth_token: str | None,
        *,
        api_base_url: str | None = None,
        log: logging.Logger | None = None,
        retries: int = 2,
        backoff_s: float = 0.2,
        timeout_s: float = 10.0,
    ) -> None:
        """`retries` extra attempts after a transient failure, waiting backoff_s, 2*backoff_s, ..."""
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_base_url = api_base_url
        self.log = log or logging.getLogger("telephony.twilio_rest")
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._http = _RedirectingHttpClient(api_base_url, timeout_s)
        self._client: Client | None = None

    def _get_client(self) -> Client:
        if self._client is None:
            if not self.account_sid or not self._auth_token:
                raise TwilioApiError(
                    "Twilio credentials not configured (IVR_TWILIO_ACCOUNT_SID / IVR_TWILIO_AUTH_TOKEN)"
                )
            self._client = Client(self.account_sid, self._auth_token, http_client=self._http)
        return self._client

    # -- public API -----------------------------------------------------------------------
    @staticmethod
    def transfer_twiml(*, to_number: str | None = None, queue: str | None = None) -> str:
        if (to_number is None) == (queue is None):
            raise ValueError("transfer needs exactly one of to_number or queue")
        response = VoiceResponse()
        if to_number is not None:
            dial = response.dial()
            dial.number(to_number)
        else:
            response.enqueue(queue)
        return str(response)

    async def transfer(self, call_sid: str, *, to_number: str | None = None, queue: str | None = None) -> Transfer:
        """Redirects the live call: <Dial><Number> to an agent, or <Enqueue> into a Twilio queue."""
        twiml = self.transfer_twiml(to_number=to_number, queue=queue)

        def do() -> tuple[str, str | None]:
            call = self._get_client().calls(call_sid).update(twiml=twiml)
            return str(call.sid or call_sid), None if call.status is None else str(call.status)

        (sid, status), attempts = await self._with_retries(do, what="transfer", call_sid=call_sid)
        self.log.info("call %s: transferred (%s) after %d attempt(s)", call_sid, to_number or queue, attempts)
        return {"call_sid": sid, "status": status, "twiml": twiml, "attempts": attempts}

    async def place_call(
        self,
        to: str,
        *,
        from_: str,
        url: str,
        status_callback: str,
        amd_callback: str,
        idempotency_key: str,
        call_sid: str | None = None,
    ) -> PlacedCall:
        """Places an outbound call with asynchronous answering-machine detection.

        `url` is fetched for TwiML once the call is answered (it plays at once, detection runs beside it);
        `amd_callback` gets `AnsweredBy` (human, machine_end_beep, ...) once detection is done: with
        DetectMessageEnd a machine is reported after its greeting, so a voicemail starts after the beep.
        `status_callback` gets the call's end (completed, busy, no-answer, failed, canceled)."""

        def do() -> tuple[str, str | None]:
            _IDEMPOTENCY_TOKEN.set(idempotency_key)
            call = self._get_client().calls.create(
                to=to,
                from_=from_,
                url=url,
                method="POST",
                status_callback=status_callback,
                status_callback_method="POST",
                status_callback_event=["completed"],
                machine_detection="DetectMessageEnd",
                async_amd="true",
                async_amd_status_callback=amd_callback,
                async_amd_status_callback_method="POST",
            )
            return str(call.sid), None if call.status is None else str(call.status)

        (sid, status), attempts = await self._with_retries(do, what="place_call", call_sid=call_sid)
        self.log.info("call %s: placed (%s) after %d attempt(s)", sid, status, attempts)
        return {"call_sid": sid, "status": status, "attempts": attempts}

    async def redirect(self, call_sid: str, twiml: str, *, what: str = "redirect") -> Transfer:
        """Replaces the TwiML a live call runs (a `<Dial>` to an agent, for one): the call moves at once."""

        def do() -> tuple[str, str | None]:
            call = self._get_client().calls(call_sid).update(twiml=twiml)
            return str(call.sid or call_sid), None if call.status is None else str(call.status)

        (sid, status), attempts = await self._with_retries(do, what=what, call_sid=call_sid)
        self.log.info("call %s: %s after %d attempt(s)", call_sid, what, attempts)
        return {"call_sid": sid, "status": status, "twiml": twiml, "attempts": attempts}

    async def send_sms(
        self,
        to: str,
        body: str,
        *,
        from_: str,
        idempotency_key: str,
        on_attempt: Callable[[int], None] | None = None,
        call_sid: str | None = None,
    ) -> str:
        """Sends one SMS and returns its message SID. `on_attempt(n)` is told of each try (1-based)."""

        def do() -> str:
            _IDEMPOTENCY_TOKEN.set(idempotency_key)
            message = self._get_client().messages.create(to=to, from_=from_, body=body)
            return str(message.sid)

        sid, _ = await self._with_retries(do, what="send_sms", call_sid=call_sid, on_attempt=on_attempt)
        return sid

    # -- retries --------------------------------------------------------------------------
    async def _with_retries(
        self, fn: Callable[[], R], *, what: str, call_sid: str | None, on_attempt: Callable[[int], None] | None = None
    ) -> tuple[R, int]:
        attempt = 0
        while True:
            attempt += 1
            if on_attempt is not None:
                on_attempt(attempt)
            try:
                # A fresh context per attempt so the idempotency token never leaks between calls.
                ctx = contextvars.copy_context()
                return await asyncio.to_thread(ctx.run, fn), attempt
            except TwilioApiError as exc:
                exc.attempts = attempt
                self.log.error("call %s: %s failed: %s", call_sid, what, exc)
                raise
            except Exception as exc:  # noqa: BLE001 - mapped below, re-raised as TwilioApiError
                err = _map_error(exc, attempt)
                if err.transient and attempt <= self.retries:
                    delay = self.backoff_s * (2 ** (attempt - 1))
                    self.log.warning(
                        "call %s: %s attempt %d failed (%s); retrying in %.2fs", call_sid, what, attempt, err, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                self.log.error("call %s: %s failed after %d attempt(s): %s", call_sid, what, attempt, err)
                raise err from exc


def _map_error(exc: Exception, attempts: int) -> TwilioApiError:
    if isinstance(exc, TwilioRestException):
        status = int(exc.status)
        code = int(exc.code) if exc.code is not None else None
        msg = str(exc.msg or "")
        if code in KNOWN_CODES and KNOWN_CODES[code] not in msg:
            msg = f"{KNOWN_CODES[code]} ({msg})" if msg else KNOWN_CODES[code]
        return TwilioApiError(
            f"HTTP {status}: {msg}", code=code, status=status, transient=status >= 500, attempts=attempts
        )
    if isinstance(exc, TwilioServiceException):
        status = int(getattr(exc, "status", 0) or 0)
        code = getattr(exc, "code", None)
        return TwilioApiError(
            f"HTTP {status}: {getattr(exc, 'title', exc)}",
            code=code,
            status=status,
            transient=status >= 500,
            attempts=attempts,
        )
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return TwilioApiError(f"cannot reach Twilio: {exc}", transient=True, attempts=attempts)
    if isinstance(exc, TwilioException):
        return TwilioApiError(str(exc), attempts=attempts)
    return TwilioApiError(f"{type(exc).__name__}: {exc}", attempts=attempts)
