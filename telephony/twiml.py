"""TwiML for the voice webhook, webhook signature checks and per-call stream tokens."""

from __future__ import annotations

import hashlib
import hmac
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


def stream_token(secret: str, call_sid: str) -> str:
    """A per-call token minted in the signature-checked webhook and checked at `start`.

    Stateless (an HMAC of the call SID), so any server process behind the load balancer can check it.
    """
    return hmac.new(secret.encode(), f"stream:{call_sid}".encode(), hashlib.sha256).hexdigest()


def is_valid_stream_token(secret: str, call_sid: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(stream_token(secret, call_sid), str(token))
