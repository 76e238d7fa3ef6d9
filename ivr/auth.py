"""Bearer-token checks for the agent and records APIs, short-lived WebSocket tickets, and use-once ledgers."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from telephony.twiml import is_valid_signature

log = logging.getLogger("ivr.auth")


def require_token(request: web.Request, token: str | None) -> None:
    """Raises 401 unless the request carries the configured token as `Authorization: Bearer <token>`.

    Only the header counts: a token in the query string would sit in access logs, proxies and browser
    history, so it is refused like a wrong one (browsers open the desk's WebSocket with a ticket instead,
    see `TicketBook`). With no token configured every request is refused: an agent endpoint is never
    open by accident.
    """
    if not token:
        raise web.HTTPUnauthorized(text="API token not configured (IVR_API_TOKEN)")
    header = request.headers.get("Authorization", "")
    supplied = header[7:] if header.startswith("Bearer ") else ""
    if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise web.HTTPUnauthorized(text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


class SpentKeys(Protocol):
    """Where spent single-use keys are remembered: this process (`UseOnce`) or the fleet (`ivr.fleet`)."""

    def first_use(self, key: str) -> bool: ...


class UseOnce:
    """Remembers what was used, for `ttl_s`, in at most `max_entries` entries (oldest forgotten first).

    `first_use(key)` is True the first time a key is seen within its TTL and False after that: the
    process's memory of spent stream tokens. `ttl_s` should cover the key's own lifetime, after which a
    replay is refused anyway.
    """

    def __init__(
        self, ttl_s: float, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, key: str) -> bool:
        now = self.clock()
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl_s
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[key]


class TicketBook:
    """Single-use tickets that stand in for the bearer token where a browser cannot send a header.

    `issue()` (behind the bearer token) returns a random ticket valid `ttl_s`; `redeem(ticket)` is True
    once, within that time. At most `max_outstanding` tickets wait at a time (the oldest is dropped).
    """

    def __init__(
        self, ttl_s: float = 30.0, *, max_outstanding: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_outstanding = max_outstanding
        self.clock = clock
        self._tickets: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> str:
        now = self.clock()
        for ticket, until in list(self._tickets.items()):
            if until <= now:
                del self._tickets[ticket]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = now + self.ttl_s
        while len(self._tickets) > self.max_outstanding:
            self._tickets.popitem(last=False)
        return ticket

    def redeem(self, ticket: str | None) -> bool:
        if not ticket:
            return False
        until = self._tickets.pop(ticket, None)
        return until is not None and until > self.clock()


class DeskTickets(Protocol):
    """Where the desk's WebSocket tickets live: this process (`LocalDeskTickets`) or the fleet (`ivr.fleet`),
    since behind a load balancer the ticket may be issued by one node and redeemed on another."""

    ttl_s: float

    async def issue(self, owner: str | None) -> str: ...

    async def redeem(self, ticket: str | None) -> tuple[bool, str | None]:
        """(valid, the agent it was issued to); a ticket is valid once, within `ttl_s`."""
        ...


class LocalDeskTickets:
    def __init__(self, book: TicketBook) -> None:
        self.book = book
        self.ttl_s = book.ttl_s
        self._owners: dict[str, str | None] = {}

    async def issue(self, owner: str | None) -> str:
        ticket = self.book.issue()
        if len(self._owners) > 2 * self.book.max_outstanding:
            self._owners.clear()  # tickets already expired or dropped by the book
        self._owners[ticket] = owner
        return ticket

    async def redeem(self, ticket: str | None) -> tuple[bool, str | None]:
        owner = self._owners.pop(ticket or "", None)
        return self.book.redeem(ticket), owner


def require_twilio_signature(
    request: web.Request,
    params: dict[str, str],
    *,
    auth_token: str | None,
    public_url: str,
    insecure_dev: bool,
    on_bad: Callable[[], None] | None = None,
) -> None:
    """Every Twilio webhook (voice, a dial's outcome, a placed callback, an inbound SMS): 403 unless the
    `X-Twilio-Signature` matches. Without an auth token only `insecure_dev` lets a request through.

    Behind a TLS-terminating proxy or a load balancer `request.url` is not what Twilio signed: the URL is rebuilt
    from the public one."""
    if not auth_token:
        if insecure_dev:
            return
        raise web.HTTPForbidden(text="no Twilio auth token configured")
    url = public_url.rstrip("/") + request.path_qs
    if not is_valid_signature(auth_token, url, params, request.headers.get("X-Twilio-Signature", "")):
        if on_bad is not None:
            on_bad()
        log.warning("Twilio webhook %s with a bad signature", request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")


class RequestCounter(Protocol):
    """Requests per key over a sliding window: in this process (`LocalRequestCounter`) or for the whole fleet
    (`ivr.fleet`), since behind a load balancer one client's requests reach every node."""

    async def hit(self, key: str, window_s: float) -> int:
        """Counts this request; returns how many the key made within the last `window_s` (this one included)."""
        ...


class LocalRequestCounter:
    def __init__(self, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    async def hit(self, key: str, window_s: float) -> int:
        now = self.clock()
        hits = self._hits.pop(key, None) or deque()
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        hits.append(now)
        self._hits[key] = hits  # most recent last: the oldest key is forgotten first
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        return len(hits)
