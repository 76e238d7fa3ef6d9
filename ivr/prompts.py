"""What the server itself says, outside any flow. All fixed, so the TTS cache renders them at start-up."""

from __future__ import annotations

HOLD_LINE = (
    "I'm passing you to a colleague who will see everything we've talked about. "
    "Please stay on the line. We're also texting you a link, in case you'd rather we call you back."
)
HOLD_LINE_NO_SMS = "I'm passing you to a colleague who will see everything we've talked about. Please stay on the line."
HOLD_REMINDER = "Thanks for holding. A colleague will be with you shortly."
ASR_RETRY = "Sorry, I missed that. Could you say it again?"

SERVER_PROMPTS = (HOLD_LINE, HOLD_LINE_NO_SMS, HOLD_REMINDER, ASR_RETRY)
