"""Keypad collection: single keys for menus, digit strings for slots, ended by the finish key, the length,
or a pause between keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flows.actions import Listen
from ivr.clock import Clock, Timer


@dataclass(frozen=True, slots=True)
class Digits:
    digits: str


class DigitCollector:
    def __init__(self, clock: Clock, emit: Callable[[Digits], None], *, inter_digit_s: float = 5.0) -> None:
        self._clock = clock
        self._emit = emit
        self._inter_digit_s = inter_digit_s
        self._listen = Listen(mode="both")
        self._buffer = ""
        self._timer: Timer | None = None

    def expect(self, listen: Listen) -> None:
        """The flow's next prompt: what was typed for the previous one no longer counts."""
        self._listen = listen
        self._buffer = ""

    def press(self, digit: str) -> None:
        listen = self._listen
        if not (listen.slot or (listen.max_digits or 1) > 1):
            self._emit(Digits(digit))  # a menu: every key is an answer
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
        self._emit(Digits(digits))

    def close(self) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
