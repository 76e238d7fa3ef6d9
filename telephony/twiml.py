"""TwiML for the voice webhook, webhook signature checks and per-call stream tokens."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit, urlunsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

MEDIA_PATH = "/twilio/media"
# Twilio: "the combined length of each <Parameter> name and value must be under 500 characters".
MAX_PARAMETER_CHARS = 499


def stream_url(public_url: str) -> str:
    """The media WebSocket URL Twilio connects to: wss:// for an https public URL (Twilio accepts only wss)."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + MEDIA_PATH, "", ""))


def connect_stream_twiml(url: str, parameters: dict[str, str]) -> str:
    """`<Connect><Stream>` with the call's parameters; Twilio forbids a query string on the stream URL."""
    response = VoiceResponse()
    connect = Connect()
    stream = Stream(url=url)
    for name, value in parameters.items():
        value = str(value)
        if len(name) + len(value) > MAX_PARAMETER_CHARS:
            value = value[: max(0, MAX_PARAMETER_CHARS - len(name))]
        stream.parameter(name=name, value=value)
    connect.append(stream)
    response.append(connect)
    return str(response)


def is_valid_signature(auth_token: str, url: str, params: dict[str, str], signature: str) -> bool:
    """Twilio's own validator: tries the URL with and without the default port."""
    if not signature:
        return False
    return bool(RequestValidator(auth_token).validate(url, params, signature))


STREAM_TOKEN_MAX_AGE_S = 300.0  # Twilio opens the stream within seconds of the webhook's answer


def stream_token(secret: str, call_sid: str, issued_at: float | None = None) -> str:
    """A per-call token minted in the signature-checked webhook and checked at `start`: `<issued>.<mac>`.

    Stateless (an HMAC of the call SID and the issue time, in whole Unix seconds), so any server process
    behind the load balancer can check it; the issue time makes it short-lived.
    """
    issued = int(time.time() if issued_at is None else issued_at)
    mac = hmac.new(secret.encode(), f"stream:{call_sid}:{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def is_valid_stream_token(
    secret: str,
    call_sid: str,
    token: str | None,
    *,
    now: float | None = None,
    max_age_s: float = STREAM_TOKEN_MAX_AGE_S,
) -> bool:
    """True for a token minted for this call less than `max_age_s` ago (a little clock skew allowed)."""
    issued_text, _, _ = str(token or "").partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    age = (time.time() if now is None else now) - issued
    if age > max_age_s or age < -30:
        return False
    return hmac.compare_digest(stream_token(secret, call_sid, issued), str(token))


# -- transfer to an agent ----------------------------------------------------------------------
def dial_agent_twiml(kind: str, address: str, *, action_url: str, whisper_url: str, timeout_s: int) -> str:
    """`<Dial action=...>` to one agent, with a whisper: Twilio fetches `whisper_url` when the agent answers
    and plays its TwiML to the agent alone before bridging the caller (`<Number url>`, `<Sip url>`,
    `<Client url>`). The action URL hears how the dial ended (DialCallStatus), so a ring-out or a busy
    line never drops the caller. `answerOnBridge` keeps the caller hearing ringing, not silence."""
    response = VoiceResponse()
    dial = response.dial(action=action_url, method="POST", timeout=timeout_s, answer_on_bridge=True)
    if kind == "number":
        dial.number(address, url=whisper_url, method="POST")
    elif kind == "sip":
        dial.sip(address, url=whisper_url, method="POST")
    elif kind == "client":
        dial.client(identity=address, url=whisper_url, method="POST")
    else:
        raise ValueError(f"unknown reach kind {kind!r}")
    return str(response)


def whisper_twiml(brief: str) -> str:
    """What the agent hears before the bridge; the caller is connected when it ends."""
    response = VoiceResponse()
    response.say(brief)
    return str(response)


def back_to_stream_twiml(line: str, url: str, parameters: dict[str, str]) -> str:
    """The dial failed: say so to the caller, then return them to our media stream (the queue's hold)."""
    response = VoiceResponse()
    response.say(line)
    connect = Connect()
    stream = Stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=str(value)[: max(0, MAX_PARAMETER_CHARS - len(name))])
    connect.append(stream)
    response.append(connect)
    return str(response)


def goodbye_twiml(line: str) -> str:
    response = VoiceResponse()
    response.say(line)
    response.hangup()
    return str(response)
