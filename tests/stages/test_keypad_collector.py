"""The digit collector on a manual clock: what a caller's keys become, and when."""

from __future__ import annotations

from flows.actions import Listen
from ivr.keypad import DigitCollector, Digits
from tests.stages.manual_clock import ManualClock


def collector(listen: Listen) -> tuple[DigitCollector, list[Digits], ManualClock]:
    clock = ManualClock()
    heard: list[Digits] = []
    keypad = DigitCollector(clock, heard.append, inter_digit_s=5.0)
    keypad.expect(listen)
    return keypad, heard, clock


def digits(heard: list[Digits]) -> list[str]:
    return [d.digits for d in heard]


def test_each_key_is_an_answer_at_a_menu():
    keypad, heard, _ = collector(Listen(mode="both"))
    keypad.press("1")
    keypad.press("2")
    assert digits(heard) == ["1", "2"]


def test_a_slot_collects_until_the_finish_key():
    keypad, heard, _ = collector(Listen(mode="dtmf", slot="order_number", finish_on="#"))
    for key in "4821#":
        keypad.press(key)
    assert digits(heard) == ["4821"]


def test_a_slot_with_a_length_answers_on_the_last_digit():
    keypad, heard, _ = collector(Listen(mode="dtmf", slot="pin", max_digits=4))
    for key in "12345":
        keypad.press(key)
    assert digits(heard) == ["1234"]  # the fifth key starts a new entry


def test_a_pause_between_keys_sends_what_was_typed_and_only_after_the_pause():
    keypad, heard, clock = collector(Listen(mode="dtmf", slot="order_number"))
    keypad.press("7")
    clock.advance(4.9)
    keypad.press("8")  # restarts the wait
    clock.advance(4.9)
    assert heard == []
    clock.advance(0.2)
    assert digits(heard) == ["78"]
    clock.advance(60)
    assert digits(heard) == ["78"]  # nothing more once the entry is sent


def test_a_new_prompt_forgets_half_typed_digits():
    keypad, heard, clock = collector(Listen(mode="dtmf", slot="order_number"))
    keypad.press("9")
    keypad.expect(Listen(mode="dtmf", slot="zip", finish_on="#"))
    keypad.press("1")
    keypad.press("#")
    assert digits(heard) == ["1"]


def test_closing_cancels_the_pending_timeout():
    keypad, heard, clock = collector(Listen(mode="dtmf", slot="order_number"))
    keypad.press("5")
    keypad.close()
    clock.advance(10)
    assert heard == []
