"""Which server nodes are alive, and what happens to the calls of one that is not.

Every node holds a lease: a key in Redis (`ivr:node:<id>`) that it renews every `heartbeat_s` and that
expires `lease_s` after the last renewal. Each call record names the node serving its media stream
(`calls.node_id`). A node's keeper renews its lease and then sweeps: the owners of open calls whose lease
is gone are dead, so their calls end with the reason ``node_lost:<id>`` and their callers leave the
agent queue. A starting node closes only the calls its own previous process left open; it never touches
a live node's calls. Without Redis (the single-node default) the only node alive is this one, so the
same sweep closes calls left by anything else, as a restart always did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ivr.storage import AsyncStorage

log = logging.getLogger("ivr.nodes")

LEASE_PREFIX = "ivr:node:"


def default_node_id() -> str:
    return socket.gethostname()


class ClusterConfig(BaseModel):
    """`Settings.cluster` (``IVR_CLUSTER__...``); the node's id and Redis URL are `IVR_NODE_ID`, `IVR_REDIS_URL`."""

    lease_s: float = Field(15.0, gt=0, description="a node silent this long is dead; its calls are ended")
    heartbeat_s: float = Field(5.0, gt=0, description="how often a node renews its lease and sweeps")


class NodeRegistry(Protocol):
    node_id: str

    async def renew(self) -> None: ...

    async def alive(self) -> set[str]: ...

    async def leave(self) -> None: ...


@dataclass
class LocalNodes:
    """One node and no Redis: nothing else can be alive."""

    node_id: str

    async def renew(self) -> None:
        return None

    async def alive(self) -> set[str]:
        return {self.node_id}

    async def leave(self) -> None:
        return None


@dataclass
class RedisNodes:
    """Leases in Redis: a key per node with a time to live, renewed by the node's keeper."""

    node_id: str
    redis: Redis
    lease_s: float
    started: float = field(default_factory=time.time)

    async def renew(self) -> None:
        info = json.dumps({"pid": os.getpid(), "started": self.started, "renewed": time.time()})
        await self.redis.set(LEASE_PREFIX + self.node_id, info, px=int(self.lease_s * 1000))

    async def alive(self) -> set[str]:
        keys = [k async for k in self.redis.scan_iter(match=LEASE_PREFIX + "*", count=100)]
        return {(k.decode() if isinstance(k, bytes) else k)[len(LEASE_PREFIX) :] for k in keys}

    async def leave(self) -> None:
        await self.redis.delete(LEASE_PREFIX + self.node_id)
        await self.redis.aclose()


@dataclass
class NodeKeeper:
    """Renews this node's lease and ends the calls of nodes whose lease lapsed."""

    nodes: NodeRegistry
    db: AsyncStorage
    config: ClusterConfig
    on_calls_ended: Callable[[], Awaitable[None]] | None = None
    on_error: Callable[[], None] | None = None  # counts each failed renewal or sweep

    async def start(self) -> None:
        """Joins: takes the lease first (so no survivor sweeps us), then closes what our own previous
        process left open, and only that."""
        await self.nodes.renew()
        closed = await self.db.close_open_calls("process_restart", self.nodes.node_id)
        if closed:
            log.warning("node %s: closed %d calls its previous process left open", self.nodes.node_id, closed)
            await self._ended()

    async def sweep(self) -> int:
        """Ends the calls of every owner without a lease; returns how many."""
        alive = await self.nodes.alive()
        ended = 0
        for owner in await self.db.open_call_owners():
            if owner in alive:
                continue
            n = await self.db.close_open_calls(f"node_lost:{owner or 'unknown'}", owner)
            if n:
                log.warning("node %s lost its lease: ended its %d open calls", owner or "(unowned)", n)
            ended += n
        if ended:
            await self._ended()
        return ended

    async def run(self) -> None:
        while True:
            try:
                await self.nodes.renew()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis or the database away for a moment: the lease outlives a few missed renewals.
                log.exception("node %s: lease renewal or sweep failed", self.nodes.node_id)
                if self.on_error is not None:
                    self.on_error()
            await asyncio.sleep(self.config.heartbeat_s)

    async def _ended(self) -> None:
        if self.on_calls_ended is not None:
            await self.on_calls_ended()


def open_nodes(node_id: str, redis_url: str | None, config: ClusterConfig) -> NodeRegistry:
    if redis_url is None:
        return LocalNodes(node_id)
    import redis.asyncio

    return RedisNodes(node_id, redis.asyncio.from_url(redis_url), config.lease_s)
