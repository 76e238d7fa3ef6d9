"""Stream tokens are bound to the call, short-lived and single-use (the process remembers spent ones)."""

from __future__ import annotations

import time

import pytest

from ivr.auth import UseOnce
from telephony.events import ProtocolError
from telephony.twilio import TwilioSerializer
from telephony.twiml import STREAM_TOKEN_MAX_AGE_S, is_valid_stream_token, stream_token
from tests.server.test_twilio_serializer import _started

SECRET = "auth-token"


def refused(ser: TwilioSerializer, token: str) -> str:
    with pytest.raises(ProtocolError) as err:
        _started(ser, token=token)
    assert err.value.fatal and err.value.call_id == "CA1"
    return err.value.kind


def test_a_second_stream_with_the_same_token_is_refused():
    used = UseOnce(ttl_s=STREAM_TOKEN_MAX_AGE_S + 60)
    token = stream_token(SECRET, "CA1")
    first = _started(TwilioSerializer(stream_secret=SECRET, first_use=used.first_use), "MZ1", token=token)
    assert first.call_id == "CA1" and "token" not in first.params
    replay = TwilioSerializer(stream_secret=SECRET, first_use=used.first_use)
    assert refused(replay, token) == "replayed_stream_token"
    # A fresh token for the same call (Twilio asked the webhook again) is a new stream, and is accepted.
    assert _started(replay, "MZ2", token=stream_token(SECRET, "CA1", time.time() - 1)).stream_id == "MZ2"
    # A forged token is refused for what it is and is not remembered.
    assert refused(TwilioSerializer(stream_secret=SECRET, first_use=used.first_use), "123.forged") == (
        "bad_stream_token"
    )
    assert len(used) == 2


def test_a_token_older_than_five_minutes_is_refused():
    now = time.time()
    assert is_valid_stream_token(SECRET, "CA1", stream_token(SECRET, "CA1", now - 299), now=now)
    assert not is_valid_stream_token(SECRET, "CA1", stream_token(SECRET, "CA1", now - 301), now=now)
    assert not is_valid_stream_token(SECRET, "CA1", stream_token(SECRET, "CA1", now + 3600), now=now)
    stale = stream_token(SECRET, "CA1", time.time() - STREAM_TOKEN_MAX_AGE_S - 1)
    assert refused(TwilioSerializer(stream_secret=SECRET), stale) == "bad_stream_token"


def test_the_issue_time_cannot_be_changed_and_the_token_is_bound_to_its_call():
    now = time.time()
    token = stream_token(SECRET, "CA1", now - 10)
    issued, mac = token.split(".")
    assert not is_valid_stream_token(SECRET, "CA1", f"{int(issued) + 5}.{mac}", now=now)
    assert not is_valid_stream_token(SECRET, "CA2", token, now=now)
    assert not is_valid_stream_token("other-secret", "CA1", token, now=now)
    for junk in (None, "", ".", "abc.def", "1" * 40 + "." + mac, mac):
        assert not is_valid_stream_token(SECRET, "CA1", junk, now=now)


def test_the_spent_token_memory_is_bounded_and_forgets_after_its_ttl():
    now = [0.0]
    used = UseOnce(ttl_s=10, max_entries=3, clock=lambda: now[0])
    assert all(used.first_use(k) for k in "abcd")
    assert len(used) == 3 and not used.first_use("d")
    now[0] = 11
    assert used.first_use("d") and len(used) == 1
