"""What the server itself says, outside any flow. All fixed, so the TTS cache renders them at start-up."""

from __future__ import annotations

HOLD_LINE = "I'm passing you to a colleague who will see everything we've talked about. Please stay on the line."
HOLD_REMINDER = "Thanks for holding. A colleague will be with you shortly."
CALLBACK_OFFER = "If you'd rather not wait, press 1 and we will call you back instead."
CALLBACK_TAKEN = (
    "Thank you. We've texted you a link to pick a time that suits you, and we'll call you back then. Goodbye."
)
CALLBACK_OVERFLOW = (
    "Sorry for the wait. We've texted you a link: you can pick a time for us to call you back, "
    "or stay on the line. You can also press 1 now and we will call you back instead."
)
CALLBACK_NOT_SENT = "Sorry, we couldn't text you a link. Please stay on the line and a colleague will be with you."
ASR_RETRY = "Sorry, I missed that. Could you say it again?"
NEXT_IN_LINE = "You are next in line."


def queue_position(position: int) -> str:
    """What a caller on hold hears of their place in the queue."""
    return NEXT_IN_LINE if position <= 1 else f"You are number {position} in line."


def callback_booked(when: str) -> str:
    """A caller on hold who booked a callback from the link."""
    return f"Thank you: your callback is booked for {when}. We'll call you then. Goodbye."


SERVER_PROMPTS = (
    HOLD_LINE,
    HOLD_REMINDER,
    CALLBACK_OFFER,
    CALLBACK_TAKEN,
    CALLBACK_OVERFLOW,
    CALLBACK_NOT_SENT,
    ASR_RETRY,
    *(queue_position(n) for n in range(1, 11)),
)
