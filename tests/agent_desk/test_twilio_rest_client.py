"""TwilioRest drives the real twilio library against the local recording server."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET

import pytest

from telephony.twilio_rest import TwilioApiError, TwilioRest
from tests.agent_desk.desk_fixtures import ACCOUNT_SID, FROM_NUMBER
from tests.helpers.twilio_recorder import TwilioRecorder

CALL_SID = "CA" + "1" * 32


async def test_transfer_posts_dial_twiml_to_the_live_call(twilio: TwilioRest, twilio_recorder: TwilioRecorder):
    result = await twilio.transfer(CALL_SID, to_number="+14155550199")

    [req] = twilio_recorder.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    assert req.headers["Authorization"].startswith("Basic ")
    root = ET.fromstring(req.form["Twiml"])
    assert root.tag == "Response"
    assert root.find("Dial/Number").text == "+14155550199"
    assert result["status"] == "in-progress" and result["attempts"] == 1


async def test_transfer_to_queue_uses_enqueue(twilio: TwilioRest, twilio_recorder: TwilioRecorder):
    await twilio.transfer(CALL_SID, queue="billing")
    root = ET.fromstring(twilio_recorder.requests[0].form["Twiml"])
    assert root.find("Enqueue").text == "billing"
    assert root.find("Dial") is None


async def test_sms_retries_one_server_error_and_sends_the_idempotency_token(
    twilio: TwilioRest, twilio_recorder: TwilioRecorder
):
    twilio_recorder.fail_next(500)
    attempts: list[int] = []
    sid = await twilio.send_sms(
        "+14155552671", "hello", from_=FROM_NUMBER, idempotency_key="CA1:callback", on_attempt=attempts.append
    )

    assert sid.startswith("SM")
    assert [r.status for r in twilio_recorder.requests] == [500, 201]
    assert attempts == [1, 2]
    # Both tries carry the same token, so Twilio itself drops a duplicate if the 500 was a lie.
    assert {r.headers.get("I-Twilio-Idempotency-Token") for r in twilio_recorder.requests} == {"CA1:callback"}


async def test_invalid_number_is_a_clear_error_and_never_retried(twilio: TwilioRest, twilio_recorder: TwilioRecorder):
    twilio_recorder.invalid_numbers.add("+442071838750")
    with pytest.raises(TwilioApiError) as info:
        await twilio.send_sms("+442071838750", "hi", from_=FROM_NUMBER, idempotency_key="k")
    assert info.value.code == 21211 and info.value.status == 400 and not info.value.transient
    assert "21211" in str(info.value) and "not a valid phone number" in str(info.value)
    assert len(twilio_recorder.requests) == 1


async def test_persistent_server_errors_give_up_after_bounded_retries(
    twilio: TwilioRest, twilio_recorder: TwilioRecorder
):
    twilio_recorder.fail_next(503, times=10)
    with pytest.raises(TwilioApiError) as info:
        await twilio.transfer(CALL_SID, to_number="+14155550199")
    assert info.value.transient and info.value.status == 503
    assert len(twilio_recorder.requests) == twilio.retries + 1 == info.value.attempts


async def test_unreachable_twilio_is_retried_then_reported():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rest = TwilioRest(ACCOUNT_SID, "tok", api_base_url=f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01)
    with pytest.raises(TwilioApiError) as info:
        await rest.send_sms("+14155552671", "x", from_=FROM_NUMBER, idempotency_key="k")
    assert info.value.transient and info.value.attempts == 2
    assert "cannot reach Twilio" in str(info.value)
