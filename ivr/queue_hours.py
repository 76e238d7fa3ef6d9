"""Each queue's hours and hold behaviour, and callback times in the customer's own time zone.

A queue is open on some weekdays between two local times of the contact centre (`time_zone`); callbacks
are booked only then, in half-hour slots over the coming days. The customer sees those slots in their own
time, the zone taken from their number (`phonenumbers.timezone`: +1 213 is Los Angeles), and every
confirmation says the time in words ("Tuesday 3 December at 2:30 pm Pacific time").
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones
from pydantic import BaseModel, Field, field_validator, model_validator

SLOT_MINUTES = 30


class QueueHours(BaseModel):
    """One queue: when it takes callbacks, how often a caller on hold hears where they stand, when the
    callback is offered instead of waiting on."""

    time_zone: str = Field("America/Los_Angeles", description="the contact centre's zone for opens/closes")
    days: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], description="open weekdays, Monday = 0")
    opens: time = time(8, 0)
    closes: time = time(18, 0)
    hold_announce_every_s: float = Field(30.0, gt=0, description="position and offer, spoken on hold this often")
    offer_callback_after_s: float = Field(
        120.0, gt=0, description="overflow: a caller waiting this long is texted the callback link"
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _opens_before_closing(self) -> QueueHours:
        if self.opens >= self.closes:
            raise ValueError(f"a queue must open before it closes ({self.opens} >= {self.closes})")
        if not set(self.days) <= set(range(7)):
            raise ValueError("days are weekday numbers, Monday = 0 to Sunday = 6")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


class QueueHoursConfig(BaseModel):
    """Settings.queue_hours: `default` for every queue not named in `queues`."""

    default: QueueHours = QueueHours()
    queues: dict[str, QueueHours] = Field(default_factory=dict)
    days_ahead: int = Field(5, ge=1, le=14, description="callback slots are offered over this many days")

    def for_queue(self, queue: str | None) -> QueueHours:
        return self.queues.get(queue or "", self.default)


def slots(hours: QueueHours, now: datetime, *, days: int, lead: timedelta = timedelta(minutes=10)) -> list[datetime]:
    """Half-hour slots (UTC) within the queue's hours, from `now + lead` over the next `days` days."""
    zone = hours.zone
    local_now = now.astimezone(zone)
    step = timedelta(minutes=SLOT_MINUTES)
    out: list[datetime] = []
    for offset in range(days + 1):
        day = local_now.date() + timedelta(days=offset)
        if day.weekday() not in hours.days:
            continue
        slot = datetime.combine(day, hours.opens, zone)
        closes = datetime.combine(day, hours.closes, zone)
        while slot < closes:
            if slot - now >= lead:
                out.append(slot.astimezone(UTC))
            slot += step
    return out


def is_open_at(hours: QueueHours, when: datetime) -> bool:
    local = when.astimezone(hours.zone)
    return local.weekday() in hours.days and hours.opens <= local.time() < hours.closes


def next_open(hours: QueueHours, after: datetime) -> datetime | None:
    """The first slot at or after `after` (a retry lands inside the queue's hours); None if never open."""
    found = slots(hours, after, days=8, lead=timedelta(0))
    return found[0] if found else None


def customer_zone(phone: str, fallback: ZoneInfo) -> ZoneInfo:
    """The one time zone of the number's area; `fallback` when the number spans several or none."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return fallback
    zones = [z for z in number_zones.time_zones_for_number(parsed) if z != number_zones.UNKNOWN_TIMEZONE]
    if len(zones) != 1:
        return fallback
    try:
        return ZoneInfo(zones[0])
    except ZoneInfoNotFoundError:
        return fallback


# What people call the zones they live in; other zones are named after their city ("Paris time").
ZONE_WORDS = {
    "America/Los_Angeles": "Pacific time",
    "America/Vancouver": "Pacific time",
    "America/Denver": "Mountain time",
    "America/Phoenix": "Mountain time",
    "America/Edmonton": "Mountain time",
    "America/Chicago": "Central time",
    "America/Winnipeg": "Central time",
    "America/New_York": "Eastern time",
    "America/Toronto": "Eastern time",
    "America/Detroit": "Eastern time",
    "America/Halifax": "Atlantic time",
    "America/Anchorage": "Alaska time",
    "Pacific/Honolulu": "Hawaii time",
    "Europe/London": "UK time",
}


def zone_words(zone: ZoneInfo) -> str:
    name = zone.key
    return ZONE_WORDS.get(name) or f"{name.rsplit('/', 1)[-1].replace('_', ' ')} time"


def clock_words(local: datetime) -> str:
    """'2:30 pm', '9 am'."""
    hour = local.hour % 12 or 12
    minute = f":{local.minute:02d}" if local.minute else ""
    return f"{hour}{minute} {'am' if local.hour < 12 else 'pm'}"


def day_words(local: datetime) -> str:
    """'Tuesday 3 December'."""
    return f"{local:%A} {local.day} {local:%B}"


def in_words(when: datetime, zone: ZoneInfo) -> str:
    """'Tuesday 3 December at 2:30 pm Pacific time'."""
    local = when.astimezone(zone)
    return f"{day_words(local)} at {clock_words(local)} {zone_words(zone)}"
