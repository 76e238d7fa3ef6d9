"""Callback times as a customer reads them: their own zone from their number, the queue's hours, in words."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from ivr.queue_hours import QueueHours, customer_zone, in_words, is_open_at, next_open, slots

LA = ZoneInfo("America/Los_Angeles")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("number", "zone"),
    [
        ("+12135550147", "America/Los_Angeles"),
        ("+13125550103", "America/Chicago"),
        ("+12125550100", "America/New_York"),
        ("+442071838750", "Europe/London"),
        ("+18005550100", "America/New_York"),  # toll free spans every US zone: the queue's zone
        ("not a number", "America/New_York"),
    ],
)
def test_the_customers_zone_comes_from_their_number(number: str, zone: str):
    assert customer_zone(number, NEW_YORK).key == zone


def test_a_time_in_words_says_the_day_the_time_and_the_zone():
    when = datetime(2024, 12, 3, 22, 30, tzinfo=UTC)
    assert in_words(when, LA) == "Tuesday 3 December at 2:30 pm Pacific time"
    assert in_words(when, NEW_YORK) == "Tuesday 3 December at 5:30 pm Eastern time"
    assert in_words(datetime(2024, 12, 3, 9, 0, tzinfo=UTC), ZoneInfo("Europe/Paris")) == (
        "Tuesday 3 December at 10 am Paris time"
    )


def test_slots_stay_inside_the_queues_hours_across_a_weekend_and_a_clock_change():
    hours = QueueHours(time_zone="America/Los_Angeles", opens=time(9), closes=time(12))
    friday_evening = datetime(2025, 10, 31, 23, 0, tzinfo=UTC)  # Friday 4 pm in LA; clocks go back on Sunday
    offered = slots(hours, friday_evening, days=4)
    local = [s.astimezone(LA) for s in offered]
    assert {d.strftime("%A") for d in local} == {"Monday", "Tuesday"}  # closed at the weekend
    assert all(time(9) <= d.time() < time(12) and d.minute in (0, 30) for d in local)
    assert local[0].hour == 9 and local[0].utcoffset().total_seconds() == -8 * 3600  # after the change
    assert all(is_open_at(hours, s) for s in offered)
    assert next_open(hours, friday_evening) == offered[0]


def test_a_queue_that_closes_before_it_opens_is_refused():
    with pytest.raises(ValidationError):
        QueueHours(opens=time(18), closes=time(8))
    with pytest.raises(ValidationError):
        QueueHours(time_zone="Mars/Olympus_Mons")
