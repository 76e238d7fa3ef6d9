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


CARD = "4556012345677004"  # a valid check digit


def recording(listen: Listen) -> tuple[DigitCollector, list[Digits], list[str], ManualClock]:
    clock = ManualClock()
    heard: list[Digits] = []
    runs: list[str] = []
    keypad = DigitCollector(clock, heard.append, inter_digit_s=5.0, on_run=runs.append)
    keypad.expect(listen)
    return keypad, heard, runs, clock


def test_a_run_of_keys_is_recorded_once_when_it_ends_not_key_by_key():
    keypad, _, runs, clock = recording(Listen(mode="both"))
    for key in "12":
        keypad.press(key)
        clock.advance(1.0)
    assert runs == []
    clock.advance(4.1)
    keypad.press("3")
    keypad.close()  # the call ended: the last run is recorded too
    assert runs == ["12", "3"]


def test_a_card_keyed_at_a_menu_reaches_the_flow_as_one_masked_entry_after_three_menu_keys():
    keypad, heard, runs, clock = recording(Listen(mode="both"))
    for key in CARD:
        keypad.press(key)
        clock.advance(0.2)
    assert digits(heard) == [CARD[0], CARD[1], CARD[2]]  # answered at once, as menu keys are
    clock.advance(5.0)
    assert digits(heard)[3:] == ["*" * (len(CARD) - 3)]  # judged with the whole run in view
    assert runs == ["*" * len(CARD)]


def test_keys_in_a_card_slot_reach_the_flow_as_typed_and_are_recorded_masked():
    keypad, heard, runs, clock = recording(Listen(mode="dtmf", slot="card_number", finish_on="#", pci=True))
    for key in CARD + "#":
        keypad.press(key)
    assert digits(heard) == [CARD]  # the flow needs them; it masks them itself
    clock.advance(5.0)
    assert runs == ["*" * (len(CARD) + 1)]


def test_a_card_typed_into_an_ordinary_slot_is_masked_and_other_numbers_are_not():
    keypad, heard, _, _ = recording(Listen(mode="dtmf", slot="reference", finish_on="#"))
    for key in CARD + "#" + "20010#":
        keypad.press(key)
    assert digits(heard) == ["*" * len(CARD), "20010"]


def test_a_flood_of_keys_is_recorded_in_bounded_pieces():
    keypad, _, runs, _ = recording(Listen(mode="both"))
    for _ in range(1000):
        keypad.press("#")
    keypad.close()
    assert "".join(runs) == "#" * 1000 and max(len(r) for r in runs) <= 256
