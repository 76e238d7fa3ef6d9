"""HTTP connector for backend systems: the `BackendGateway` the flows use in production.

Every call has one hard time budget (`BackendConfig.timeout_s`, default 2 s) that covers all of
its attempts, because a slow backend must cost the caller a holding line, not 15 s of silence
that piles calls up behind it. Idempotent operations are retried with exponential backoff while
the budget lasts; writes are never retried. A circuit breaker per backend stops calls to a
backend that keeps failing, so flows fail fast to a callback offer. Every failure is one of the
`flows.gateway` errors, logged with the call id and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.gateway import (
    BackendBadResponse,
    BackendBadStatus,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
)
from flows.identity import normalise_phone

MAX_RESPONSE_BYTES = 1_000_000  # a CRM answer is a few kB; more is a broken backend, not data
LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class BackendConfig(BaseModel):
    """One entry of `Settings.backends` (``IVR_BACKENDS__CRM__BASE_URL=...``)."""

    base_url: str
    timeout_s: float = Field(2.0, gt=0, description="hard budget per request, never the 15 s that causes avalanches")
    retries: int = Field(2, ge=0, description="retries for idempotent calls")
    backoff_s: float = 0.05
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    breaker_reset_s: float = 30.0


# --- request parameters (checked before anything is sent) ---------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PhoneParams(_Params):
    phone: str = Field(min_length=1, max_length=64)


class OrderParams(_Params):
    order_id: str = Field(min_length=1, max_length=64)


class CustomerParams(_Params):
    customer_id: str = Field(min_length=1, max_length=64)


class BlockCardParams(CustomerParams):
    card_last4: str = Field(pattern=r"^\d{4}$")


class TopUpParams(CustomerParams):
    amount: float = Field(gt=0, le=10_000)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class VerifyParams(CustomerParams):
    """A verify step's check. The secret travels only in the POST body, never in a URL, a log or an error."""

    method: Literal["pin", "account_digits", "sms_code"]
    secret: str = Field(pattern=r"^\d{4,8}$", repr=False)


class InteractionParams(CustomerParams):
    """A handled call written back to the customer's record: the agent's disposition and notes."""

    call_sid: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1, max_length=128)
    disposition: str = Field(min_length=1, max_length=64)
    notes: str = Field("", max_length=4000)
    handle_s: float = Field(ge=0)
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


# --- responses (anything else is BackendBadResponse) ---------------------------------------


class _Result(BaseModel):
    # strict: "true" is not a bool and "12" is not a number; a backend that sends those is broken
    model_config = ConfigDict(strict=True, extra="ignore")


class OrderResult(_Result):
    order_id: str
    item: str
    status: Literal["in_transit", "delivered", "processing"]
    eta: str | None


class TicketResult(_Result):
    date: str
    type: str
    resolved: bool


class CustomerResult(_Result):
    customer_id: str
    name: str
    email: str | None
    phone: str | None = None
    lifetime_value: float
    tier: str
    preferred_channel: str
    orders: list[OrderResult]
    tickets: list[TicketResult]


class BalanceResult(_Result):
    balance: float
    currency: str


class BlockCardResult(_Result):
    blocked: bool
    reason: str | None = None


class ArrangementResult(_Result):
    arranged: bool
    next_date: str | None


class TopUpResult(_Result):
    ok: bool
    new_balance: float


class VerifyResult(_Result):
    verified: bool


class SendCodeResult(_Result):
    sent: bool


class InteractionResult(_Result):
    interaction_id: str


@dataclass(frozen=True)
class Operation:
    """How one named operation maps onto HTTP."""

    method: Literal["GET", "POST"]
    path: str  # "{name}" placeholders are filled (URL-quoted) from params; the rest go in query or body
    idempotent: bool  # only idempotent operations are retried
    params: type[_Params]
    result: type[_Result]
    not_found_ok: bool = False  # a JSON 404 means "no such record": {"found": False}, not an error
    idempotency_key: bool = False  # send an Idempotency-Key header so a replay never applies twice


CRM_OPERATIONS: dict[str, Operation] = {
    "customer_by_phone": Operation("GET", "/customers/by-phone", True, PhoneParams, CustomerResult, not_found_ok=True),
    "order_status": Operation("GET", "/orders/{order_id}", True, OrderParams, OrderResult, not_found_ok=True),
    "balance": Operation("GET", "/customers/{customer_id}/balance", True, CustomerParams, BalanceResult),
    "block_card": Operation("POST", "/customers/{customer_id}/cards/block", False, BlockCardParams, BlockCardResult),
    "payment_arrangement": Operation(
        "POST", "/customers/{customer_id}/payment-arrangement", False, CustomerParams, ArrangementResult
    ),
    "top_up": Operation(
        "POST", "/customers/{customer_id}/top-up", False, TopUpParams, TopUpResult, idempotency_key=True
    ),
    # Not idempotent: a retried check would count as another attempt where the CRM keeps its own lockout.
    "verify_caller": Operation("POST", "/customers/{customer_id}/verify", False, VerifyParams, VerifyResult),
    "send_code": Operation("POST", "/customers/{customer_id}/verify/code", False, CustomerParams, SendCodeResult),
    # Agent wrap-up; the key makes a retried write land once.
    "log_interaction": Operation(
        "POST",
        "/customers/{customer_id}/interactions",
        False,
        InteractionParams,
        InteractionResult,
        idempotency_key=True,
    ),
}
# backend name (a key of Settings.backends) -> its operations
OPERATIONS: dict[str, dict[str, Operation]] = {"crm": CRM_OPERATIONS}


# --- metrics --------------------------------------------------------------------------------

OK_KINDS = ("ok", "not_found")  # outcomes that are answers; every other kind is an error


class BackendMetrics:
    """Backend calls on `prometheus_client`, registered on the registry given (the server's, for /metrics).

    ivr_backend_requests_total{backend,operation,kind}  calls by outcome: "ok", "not_found" or an error kind
    ivr_backend_errors_total{backend,operation,kind}    the failed ones (timeout, unavailable, bad_status, ...)
    ivr_backend_attempts_total{backend,operation}       HTTP requests sent, retries included
    ivr_backend_latency_seconds{backend,operation}      histogram of call latency, retries included
    ivr_backend_circuit_open{backend}                   1 while the backend's circuit is open
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ivr_backend_requests", "Backend calls by outcome kind", ["backend", "operation", "kind"], registry=r
        )
        self.errors = Counter(
            "ivr_backend_errors", "Failed backend calls by error kind", ["backend", "operation", "kind"], registry=r
        )
        self.attempts_sent = Counter(
            "ivr_backend_attempts",
            "HTTP requests sent to backends, retries included",
            ["backend", "operation"],
            registry=r,
        )
        self.latency = Histogram(
            "ivr_backend_latency_seconds",
            "Backend call latency, retries included",
            ["backend", "operation"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.circuit_open = Gauge(
            "ivr_backend_circuit_open", "1 while a backend's circuit is open", ["backend"], registry=r
        )

    def record_call(self, backend: str, operation: str, kind: str, latency_s: float) -> None:
        self.requests.labels(backend, operation, kind).inc()
        if kind not in OK_KINDS:
            self.errors.labels(backend, operation, kind).inc()
        self.latency.labels(backend, operation).observe(latency_s)

    def record_attempt(self, backend: str, operation: str) -> None:
        """One HTTP request sent (a call with retries makes several)."""
        self.attempts_sent.labels(backend, operation).inc()

    def set_circuit_open(self, backend: str, is_open: bool) -> None:
        self.circuit_open.labels(backend).set(1.0 if is_open else 0.0)

    def count(self, backend: str, operation: str, kind: str | None = None) -> int:
        """Calls with that outcome kind, or all calls when kind is None (read back from the registry)."""
        total = 0.0
        for family in self.requests.collect():
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "ivr_backend_requests_total"
                    and (labels["backend"], labels["operation"]) == (backend, operation)
                    and kind in (None, labels["kind"])
                ):
                    total += sample.value
        return int(total)

    def attempts(self, backend: str, operation: str) -> int:
        value = self.registry.get_sample_value(
            "ivr_backend_attempts_total", {"backend": backend, "operation": operation}
        )
        return int(value or 0)


# --- circuit breaker ------------------------------------------------------------------------


class CircuitBreaker:
    """Opens after `failures` consecutive failed calls; after `reset_s` lets one trial call through."""

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float]) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self._trial_in_flight or self._clock() - self._opened_at >= self._reset_s:
            return "half_open"
        return "open"

    def admit(self) -> bool | None:
        """None: refused (open). False: a normal call. True: the one half-open trial call."""
        if self._opened_at is None:
            return False
        if not self._trial_in_flight and self._clock() - self._opened_at >= self._reset_s:
            self._trial_in_flight = True
            return True
        return None

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        if self._trial_in_flight:
            self._trial_in_flight = False
            self._opened_at = self._clock()
            return
        self._failures += 1
        if self._failures >= self._threshold and self._opened_at is None:
            self._opened_at = self._clock()

    def abandon_trial(self) -> None:
        """The trial call was cancelled (the caller hung up): let the next call try instead."""
        self._trial_in_flight = False


# --- the gateway ----------------------------------------------------------------------------


class BackendBadRequest(BackendError, ValueError):
    """The flow passed params the operation cannot take (missing, malformed); nothing was sent.

    A BackendError so a flow degrades like any failed lookup; a ValueError because it is bad input.
    """

    kind = "bad_request"


class _Retryable(Exception):
    def __init__(self, error: BackendError) -> None:
        self.error = error


class _BreakerFailure(Exception):
    """Wraps an error that counts against the circuit breaker."""

    def __init__(self, error: BackendError) -> None:
        self.error = error


def _bad_status(backend: str, operation: str, status: int) -> BackendBadStatus:
    err = BackendBadStatus(backend, operation, f"HTTP {status}")
    err.status = status  # type: ignore[attr-defined]  # flows may branch on it
    return err


class HttpBackendGateway:
    """`flows.gateway.BackendGateway` over HTTP/JSON with aiohttp.

    `clock` drives the circuit breaker only (tests pass a fake one); the time budget of a call
    is real time on the event loop.
    """

    def __init__(
        self,
        configs: dict[str, BackendConfig],
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: BackendMetrics | None = None,
        log: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        operations: dict[str, dict[str, Operation]] | None = None,
    ) -> None:
        self._configs = dict(configs)
        self._session = session
        self._owns_session = session is None
        self.metrics = metrics or BackendMetrics()
        self._log = log or logging.getLogger("ivr.backends")
        self._clock = clock
        self._operations = operations or OPERATIONS
        self._breakers = {
            name: CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset_s, clock)
            for name, cfg in self._configs.items()
        }
        self._closed = False

    def breaker_state(self, backend: str) -> str:
        return self._breakers[backend].state

    async def close(self) -> None:
        self._closed = True
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> HttpBackendGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, backend: str, operation: str, params: dict[str, Any], *, call_sid: str) -> dict[str, Any]:
        """Run a named operation. Raises BackendError subclasses (BackendBadRequest for bad params)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await self._call(backend, operation, params, call_sid)
        except BackendError as exc:
            self.metrics.record_call(backend, operation, exc.kind, loop.time() - started)
            self._log.error(
                "backend call failed call_sid=%s backend=%s operation=%s kind=%s: %s",
                call_sid,
                backend,
                operation,
                exc.kind,
                exc,
                extra={"call_sid": call_sid, "backend": backend, "operation": operation, "kind": exc.kind},
            )
            raise
        kind = "not_found" if result.get("found") is False else "ok"
        self.metrics.record_call(backend, operation, kind, loop.time() - started)
        return result

    async def _call(self, backend: str, operation: str, params: dict[str, Any], call_sid: str) -> dict[str, Any]:
        cfg = self._configs.get(backend)
        op = self._operations.get(backend, {}).get(operation)
        if cfg is None:
            raise BackendUnavailable(backend, operation, "backend not configured (Settings.backends)")
        if op is None:
            raise BackendUnavailable(backend, operation, "no such operation")
        checked = self._check_params(backend, operation, op, params)

        if isinstance(checked, PhoneParams):
            try:
                checked.phone = normalise_phone(checked.phone)
            except ValueError:
                # Withheld or malformed caller IDs are common: that is "unknown caller", not an error.
                self._log.info(
                    "no lookup for unusable phone number call_sid=%s backend=%s operation=%s",
                    call_sid,
                    backend,
                    operation,
                    extra={"call_sid": call_sid, "backend": backend, "operation": operation},
                )
                return {"found": False}

        breaker = self._breakers[backend]
        trial = breaker.admit()
        if trial is None:
            self.metrics.set_circuit_open(backend, True)
            raise BackendUnavailable(backend, operation, "circuit open after repeated failures")
        try:
            result = await self._attempts(backend, operation, cfg, op, checked, call_sid, retry=not trial)
        except _BreakerFailure as wrapped:
            breaker.failure()
            self.metrics.set_circuit_open(backend, breaker.state != "closed")
            raise wrapped.error from wrapped.__cause__
        except BackendError:
            breaker.success()  # the backend answered (e.g. a 4xx): it is up
            self.metrics.set_circuit_open(backend, False)
            raise
        except BaseException:
            if trial:
                breaker.abandon_trial()
            raise
        breaker.success()
        self.metrics.set_circuit_open(backend, False)
        return result

    def _check_params(self, backend: str, operation: str, op: Operation, params: dict[str, Any]) -> _Params:
        try:
            return op.params.model_validate(params)
        except ValidationError as exc:
            # Only field names and error types: values may be card digits (PCI) or personal data.
            problems = ", ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['type']}" for e in exc.errors())
            raise BackendBadRequest(backend, operation, f"invalid params ({problems})") from None

    async def _attempts(
        self,
        backend: str,
        operation: str,
        cfg: BackendConfig,
        op: Operation,
        params: _Params,
        call_sid: str,
        *,
        retry: bool,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout_s
        attempts = 1 + (cfg.retries if op.idempotent and retry else 0)
        last: BackendError | None = None
        for attempt in range(attempts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await self._attempt(backend, operation, cfg, op, params, call_sid, remaining)
            except _Retryable as exc:
                last = exc.error
            delay = cfg.backoff_s * (2**attempt)
            if attempt + 1 >= attempts or loop.time() + delay >= deadline:
                break
            self._log.warning(
                "backend attempt %d/%d failed, retrying call_sid=%s backend=%s operation=%s kind=%s: %s",
                attempt + 1,
                attempts,
                call_sid,
                backend,
                operation,
                last.kind,
                last,
                extra={"call_sid": call_sid, "backend": backend, "operation": operation, "kind": last.kind},
            )
            await asyncio.sleep(delay)
        if last is None:
            last = BackendTimeout(backend, operation, f"no time left in the {cfg.timeout_s:g} s budget")
        raise _BreakerFailure(last)

    async def _attempt(
        self,
        backend: str,
        operation: str,
        cfg: BackendConfig,
        op: Operation,
        params: _Params,
        call_sid: str,
        budget_s: float,
    ) -> dict[str, Any]:
        values = params.model_dump(exclude_none=True)
        idem_key = values.pop("idempotency_key", None)
        path = op.path
        for name in list(values):
            if "{" + name + "}" in path:
                path = path.replace("{" + name + "}", quote(str(values.pop(name)), safe=""))
        headers = {"Accept": "application/json", "X-Call-Sid": call_sid}
        if op.idempotency_key:
            headers["Idempotency-Key"] = idem_key or _derived_idempotency_key(call_sid, backend, operation, params)
        url = cfg.base_url.rstrip("/") + path
        self.metrics.record_attempt(backend, operation)
        try:
            async with asyncio.timeout(budget_s):
                async with self._client().request(
                    op.method,
                    url,
                    headers=headers,
                    allow_redirects=False,
                    params=values if op.method == "GET" and values else None,
                    json=values if op.method != "GET" else None,
                ) as resp:
                    status = resp.status
                    body = await _read_limited(resp)
        except TimeoutError as exc:
            raise _BreakerFailure(
                BackendTimeout(backend, operation, f"no answer within the {cfg.timeout_s:g} s budget")
            ) from exc
        except _TooLarge:
            raise _BreakerFailure(BackendBadResponse(backend, operation, "response too large")) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(
                BackendUnavailable(backend, operation, f"connection failed: {type(exc).__name__}: {exc}")
            ) from exc
        if status >= 500 or status == 429:
            raise _Retryable(_bad_status(backend, operation, status))
        if status == 404 and op.not_found_ok and _is_json_object(body):
            return {"found": False}
        if status >= 300:
            raise _bad_status(backend, operation, status)
        try:
            model = op.result.model_validate_json(body)
        except ValidationError as exc:
            problems = ", ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['type']}" for e in exc.errors()[:5])
            raise _BreakerFailure(BackendBadResponse(backend, operation, f"unusable answer ({problems})")) from None
        result = model.model_dump(mode="json")
        if op.not_found_ok:
            result["found"] = True
        return result

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("HttpBackendGateway is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session


class _TooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json_object(body: bytes) -> bool:
    # A 404 HTML page from a proxy or a wrong base_url is a misconfiguration, not "no such customer".
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _derived_idempotency_key(call_sid: str, backend: str, operation: str, params: _Params) -> str:
    # Same call, same operation, same arguments -> same key: if a flow re-issues a write after a
    # timeout, the backend applies it once. Pass params["idempotency_key"] to choose otherwise.
    canonical = json.dumps(params.model_dump(exclude={"idempotency_key"}), sort_keys=True)
    return hashlib.sha256(f"{call_sid}|{backend}|{operation}|{canonical}".encode()).hexdigest()
