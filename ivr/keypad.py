"""Keypad collection: single keys for menus, digit strings for slots, ended by the finish key, the length,
or a pause between keys.

PCI: keys are judged by what they are, not by which prompt is playing. Keys pressed with no pause longer than
`inter_digit_s` between them are one *run*. A run is recorded once, when it ends, masked as a whole
(`on_run`), never key by key. At a menu only the first `MENU_KEYS_AT_ONCE` keys of a run are answers at once
(fast callers typing ahead through menus); the rest of the run is one entry, answered when the run ends, so a
card number typed at a menu reaches the flow as one masked entry rather than digit by digit. Entries for
anything but a card slot (`Listen.pci`, where the flow needs the digits and masks them itself) are masked too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flows.actions import Listen
from flows.pci import mask_keyed_digits
from ivr.clock import Clock, Timer

MENU_KEYS_AT_ONCE = 3  # at most 3 leading digits of a card typed at menus reach the flow one by one
MAX_RUN_KEYS = 256  # a run is recorded at this length at the latest: a flood of keys cannot grow it unbounded


@dataclass(frozen=True, slots=True)
class Digits:
    digits: str


class DigitCollector:
    def __init__(
        self,
        clock: Clock,
        emit: Callable[[Digits], None],
        *,
        inter_digit_s: float = 5.0,
        on_run: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._emit = emit
        self._on_run = on_run
        self._inter_digit_s = inter_digit_s
        self._listen = Listen(mode="both")
        self._buffer = ""
        self._timer: Timer | None = None
        self._run = ""  # the run's keys as recorded: a key typed in a card slot is "*" already
        self._menu_keys = 0  # keys of this run answered one by one at menus
        self._menu_entry = ""  # later menu keys of this run: one entry when the run ends
        self._run_timer: Timer | None = None

    def expect(self, listen: Listen) -> None:
        """The flow's next prompt: what was typed for the previous one no longer counts."""
        self._listen = listen
        self._buffer = ""
        self._menu_entry = ""

    def press(self, digit: str) -> None:
        listen = self._listen
        if len(self._run) >= MAX_RUN_KEYS:
            self._end_run()
        self._run += "*" if listen.pci else digit
        if self._run_timer is not None:
            self._run_timer.cancel()
        self._run_timer = self._clock.call_later(self._inter_digit_s, self._end_run)
        if not (listen.slot or (listen.max_digits or 1) > 1):
            if self._menu_keys < MENU_KEYS_AT_ONCE and not self._menu_entry:
                self._menu_keys += 1
                self._emit(Digits(digit))  # a menu: a key is an answer
            else:
                self._menu_entry += digit
            return
        if digit == listen.finish_on:
            self.flush()
            return
        self._buffer += digit
        if listen.max_digits and len(self._buffer) >= listen.max_digits:
            self.flush()
            return
        self._cancel_timer()
        self._timer = self._clock.call_later(self._inter_digit_s, self.flush)

    def flush(self) -> None:
        """What was typed so far (possibly nothing) is the answer."""
        self._cancel_timer()
        digits, self._buffer = self._buffer, ""
        self._emit(Digits(digits if self._listen.pci else mask_keyed_digits(digits)))

    def close(self) -> None:
        """The call ended: the last run is recorded, nothing more is answered."""
        self._cancel_timer()
        self._menu_entry = ""
        self._end_run()

    def _end_run(self) -> None:
        if self._run_timer is not None:
            self._run_timer.cancel()
            self._run_timer = None
        run, entry = self._run, self._menu_entry
        self._run, self._menu_entry, self._menu_keys = "", "", 0
        if not run:
            return
        masked = mask_keyed_digits(run)
        if entry:
            # The entry is the run's tail: masked with the whole run in view, so the digits answered one by one
            # before it cannot hide a card number from the check.
            self._emit(Digits(masked[-len(entry) :]))
        if self._on_run is not None:
            self._on_run(masked)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
