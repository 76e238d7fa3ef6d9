"""Personal data: how long it is kept (retention per region, in-memory contexts) and what an erasure asks for.

Callers' data lives in two places: the database (erased and purged by `ivr.storage.Storage`) and the
memory of the server process (the contexts of escalated calls kept for a transfer back, and live calls).
`ContextStore` bounds the second by age and by count, so nothing about a caller outlives its use there.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from flows.identity import normalise_phone

V = TypeVar("V")


class PrivacyConfig(BaseModel):
    """`Settings.privacy`: retention of call records and of in-memory call contexts."""

    retention_days: int = Field(365, ge=1, description="default retention of call records, in days")
    retention_days_by_region: dict[str, int] = Field(
        default_factory=dict,
        description="retention in days for calls taken in a region (calls.region), overriding the default",
    )
    context_ttl_s: float = Field(
        3600.0, gt=0, description="how long an escalated call's context is kept in memory for a transfer back"
    )
    context_max: int = Field(1000, ge=1, description="at most this many escalated calls' contexts in memory")

    def retention_for(self, region: str | None) -> int:
        if region is not None and region in self.retention_days_by_region:
            return self.retention_days_by_region[region]
        return self.retention_days


@dataclass(frozen=True)
class ErasureRequest:
    """Whose data to erase: a customer id, a phone number (normalised to E.164), or both."""

    customer_id: str | None = None
    phone: str | None = None

    @classmethod
    def build(cls, *, customer_id: str | None = None, phone: str | None = None) -> ErasureRequest:
        """ValueError when neither is given or the phone number is not a valid number."""
        if not customer_id and not phone:
            raise ValueError("an erasure needs a customer id or a phone number")
        return cls(customer_id=customer_id or None, phone=normalise_phone(phone) if phone else None)

    @property
    def subject(self) -> str:
        """What the audit log names: the customer id, and the phone number masked (never in full)."""
        parts = []
        if self.customer_id:
            parts.append(f"customer:{self.customer_id}")
        if self.phone:
            parts.append(f"phone:{mask_phone(self.phone)}")
        return " ".join(parts)


def mask_phone(number: str) -> str:
    return number[:-4] + "****" if len(number) > 6 else "****"


def same_phone(raw: str | None, e164: str) -> bool:
    """Whether a stored caller ID (any writing) is this E.164 number; an unparseable one is not."""
    if not raw:
        return False
    try:
        return normalise_phone(raw) == e164
    except ValueError:
        return False


class ContextStore(Generic[V]):
    """A dict of call id -> context whose entries expire after `ttl_s` and that holds at most `max_items`
    (the oldest go first). Expired entries are dropped on every access; `now` is injectable for tests."""

    def __init__(self, ttl_s: float, max_items: int, *, now: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_items = max_items
        self._now = now
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def _expire(self) -> None:
        limit = self._now() - self.ttl_s
        while self._items:
            key, (stored_at, _) = next(iter(self._items.items()))
            if stored_at > limit and len(self._items) <= self.max_items:
                break
            del self._items[key]

    def __setitem__(self, key: str, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = (self._now(), value)
        self._expire()

    def get(self, key: str) -> V | None:
        self._expire()
        item = self._items.get(key)
        return item[1] if item else None

    def pop(self, key: str, default: V | None = None) -> V | None:
        self._expire()
        item = self._items.pop(key, None)
        return item[1] if item else default

    def __contains__(self, key: object) -> bool:
        self._expire()
        return key in self._items

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def items(self) -> Iterator[tuple[str, V]]:
        self._expire()
        return iter([(k, v) for k, (_, v) in self._items.items()])

    def remove_where(self, matches: Callable[[V], bool]) -> int:
        """Drops every entry whose value matches; returns how many."""
        keys = [k for k, (_, v) in self._items.items() if matches(v)]
        for key in keys:
            del self._items[key]
        return len(keys)
