"""Live state a fleet of nodes shares through Redis, so nothing another node needs lives in one process.

- Desk events (pub/sub on ``ivr:events``): a node whose queue changed (an escalation, a hang-up, an accept)
  publishes; every other node pushes a fresh snapshot to its own agents at once, no polling. Alerts (a
  caller requeued after a missed transfer, a caller gone) reach every node's pages the same way.
- Transfers: the node that accepts a call for an agent marks it (``ivr:transferring:<call>``, and an event),
  so the node holding the media stream reads the carrier's `stop` as a transfer, not as the caller hanging up.
- The desk's WebSocket tickets (``ivr:ws-ticket:<ticket>``): the page asks one node for a ticket and its
  WebSocket may reach another.
- Spent stream tokens (``ivr:stream-token:<token>``, SET NX): the webhook may land on one node and the media
  stream on another, and a replayed token is still refused on every node.
- Request counts (``ivr:rate:<what>:<key>``, a sorted set per key): a callback link's per-minute limit holds
  across nodes, whichever node each request reaches.
- Contexts of escalated calls (``ivr:context:<call>``, JSON, expiring with `Settings.privacy.context_ttl_s`):
  a call an agent transfers back may return on any node and resumes with everything known; erasure removes
  them here too.

Records stay in the database; leases and call ownership are `ivr/nodes.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import TypeAdapter

from flows.context import CallContext

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

log = logging.getLogger("ivr.fleet")

CHANNEL = "ivr:events"
TRANSFER_TTL_S = 600
EventKind = Literal["queue", "transferring", "alert"]
# Contexts travel as JSON, never as pickles: nothing read back from Redis can run code.
CONTEXT_JSON = TypeAdapter(CallContext)


@dataclass(frozen=True)
class FleetEvent:
    kind: EventKind
    node: str
    call_sid: str | None = None
    alert: tuple[str, str] | None = None  # (kind, text) of a line every agent's page shows


@dataclass
class Fleet:
    node_id: str
    redis: Redis
    # The serializer checks a stream token synchronously while it parses `start`: one loopback round trip.
    sync_redis: SyncRedis
    on_queue_changed: Callable[[], Awaitable[None]] | None = None
    on_transferring: Callable[[str], object] | None = None
    on_alert: Callable[[str, str], Awaitable[None]] | None = None
    on_error: Callable[[], None] | None = None  # counts each failure (`ivr_errors_total{kind="fleet"}`)
    _listener: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def connect(cls, node_id: str, url: str) -> Fleet:
        import redis
        import redis.asyncio

        return cls(node_id, redis.asyncio.from_url(url), redis.Redis.from_url(url))

    # -- what this node tells the others ----------------------------------------------------
    async def queue_changed(self) -> None:
        await self._publish(FleetEvent("queue", self.node_id))

    async def alert(self, kind: str, text: str) -> None:
        await self._publish(FleetEvent("alert", self.node_id, alert=(kind, text)))

    async def transferring(self, call_sid: str) -> None:
        await self.redis.set(f"ivr:transferring:{call_sid}", self.node_id, ex=TRANSFER_TTL_S)
        await self._publish(FleetEvent("transferring", self.node_id, call_sid))

    async def is_transferring(self, call_sid: str) -> bool:
        return bool(await self.redis.exists(f"ivr:transferring:{call_sid}"))

    async def keep_context(self, call_sid: str, context_json: bytes, ttl_s: float) -> None:
        await self.redis.set(f"ivr:context:{call_sid}", context_json, px=int(ttl_s * 1000))

    async def take_context(self, call_sid: str) -> bytes | None:
        value = await self.redis.getdel(f"ivr:context:{call_sid}")
        return _as_bytes(value) if value is not None else None

    async def erase_contexts(self, matches: Callable[[bytes], bool]) -> int:
        """Deletes every kept context `matches` accepts; returns how many."""
        erased = 0
        async for key in self.redis.scan_iter(match="ivr:context:*", count=500):
            value = await self.redis.get(key)
            if value is not None and matches(_as_bytes(value)):
                erased += int(await self.redis.delete(key))
        return erased

    def desk_tickets(self, ttl_s: float) -> SharedDeskTickets:
        return SharedDeskTickets(self, ttl_s)

    def request_counter(self, prefix: str) -> SharedRequestCounter:
        return SharedRequestCounter(self, prefix)

    def spent_keys(self, ttl_s: float) -> SharedSpentKeys:
        return SharedSpentKeys(self, ttl_s)

    async def _publish(self, event: FleetEvent) -> None:
        payload = {"kind": event.kind, "node": event.node, "call_sid": event.call_sid, "alert": event.alert}
        try:
            await self.redis.publish(CHANNEL, json.dumps(payload))
        except Exception:
            # Other nodes' agents then see the change at their next refresh; this node's already have it.
            log.exception("node %s: could not publish %s", self.node_id, event.kind)
            self._failed()

    # -- what the others tell this node ------------------------------------------------------
    async def start(self) -> None:
        subscribed = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(subscribed), name="fleet-events")
        await asyncio.wait_for(subscribed.wait(), timeout=10.0)

    async def _listen(self, subscribed: asyncio.Event) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    subscribed.set()
                    await self._dispatch(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis restarted or the link dropped: agents here fall back on their page's refresh meanwhile.
                log.exception("node %s: fleet event subscription lost; reconnecting", self.node_id)
                self._failed()
                await asyncio.sleep(1.0)

    async def _dispatch(self, pubsub: PubSub) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                data = json.loads(message["data"])
                alert = data.get("alert")
                event = FleetEvent(
                    data["kind"], data["node"], data.get("call_sid"), (str(alert[0]), str(alert[1])) if alert else None
                )
            except (ValueError, KeyError, TypeError):
                log.warning("node %s: ignored a malformed fleet event", self.node_id)
                self._failed()
                continue
            if event.node == self.node_id:
                continue
            try:
                if event.kind == "queue" and self.on_queue_changed is not None:
                    await self.on_queue_changed()
                elif event.kind == "transferring" and event.call_sid and self.on_transferring is not None:
                    self.on_transferring(event.call_sid)
                elif event.kind == "alert" and event.alert and self.on_alert is not None:
                    await self.on_alert(*event.alert)
            except Exception:
                log.exception("node %s: handling a %s event failed", self.node_id, event.kind)
                self._failed()

    def _failed(self) -> None:
        if self.on_error is not None:
            self.on_error()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.redis.aclose()
        self.sync_redis.close()


@dataclass
class SharedSpentKeys:
    """`ivr.auth.SpentKeys` for a fleet: a key is spent on every node once any node has used it."""

    fleet: Fleet
    ttl_s: float

    def first_use(self, key: str) -> bool:
        name = f"ivr:stream-token:{key}"
        return bool(self.fleet.sync_redis.set(name, self.fleet.node_id, nx=True, px=int(self.ttl_s * 1000)))


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


@dataclass
class SharedDeskTickets:
    """`ivr.auth.DeskTickets` for a fleet: issued on one node, redeemable once on any."""

    fleet: Fleet
    ttl_s: float

    async def issue(self, owner: str | None) -> str:
        ticket = secrets.token_urlsafe(24)
        await self.fleet.redis.set(f"ivr:ws-ticket:{ticket}", owner or "", px=int(self.ttl_s * 1000))
        return ticket

    async def redeem(self, ticket: str | None) -> tuple[bool, str | None]:
        if not ticket:
            return False, None
        owner = await self.fleet.redis.getdel(f"ivr:ws-ticket:{ticket}")
        if owner is None:
            return False, None
        return True, _as_bytes(owner).decode() or None


@dataclass
class SharedRequestCounter:
    """`ivr.auth.RequestCounter` for a fleet: a sliding window of request times per key in Redis."""

    fleet: Fleet
    prefix: str

    async def hit(self, key: str, window_s: float) -> int:
        name = f"ivr:rate:{self.prefix}:{key}"
        now = time.time()
        async with self.fleet.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(name, 0, now - window_s)
            pipe.zadd(name, {f"{now:.6f}:{secrets.token_hex(4)}": now})
            pipe.zcard(name)
            pipe.expire(name, max(1, int(window_s) + 1))
            _, _, count, _ = await pipe.execute()
        return int(count)
