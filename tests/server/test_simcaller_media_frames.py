"""The simulated caller's fast `media` frames are the reference codec's, byte for byte, whatever frames come between."""

from __future__ import annotations

import base64

from telephony.simcaller import MediaFrames
from telephony.twilio import TwilioCallerCodec

CALL = "CA" + "1" * 32
STREAM = "MZ" + "2" * 32
ACCOUNT = "AC" + "3" * 32


def codec(stream_sid: str = STREAM) -> TwilioCallerCodec:
    return TwilioCallerCodec(stream_sid=stream_sid, call_sid=CALL, account_sid=ACCOUNT)


def test_media_frames_equal_the_codecs_byte_for_byte_in_a_whole_call():
    reference = codec()
    fast_codec = codec()
    fast = MediaFrames(fast_codec)
    payloads = [b"\xff" * 160, bytes(range(160)), bytes(range(80)), b"\x00" * 160, bytes(range(255, 95, -1))]

    def both(event: str, arg: object = None) -> tuple[str, str]:
        if event == "media":
            assert isinstance(arg, bytes)
            return reference.media(arg), fast.frame(base64.b64encode(arg).decode("ascii"), len(arg))
        build = {
            "connected": lambda c: c.connected(),
            "start": lambda c: c.start({"From": "+14155550100", "token": 'a "quoted" value'}),
            "dtmf": lambda c: c.dtmf(str(arg)),
            "mark": lambda c: c.mark(str(arg)),
            "stop": lambda c: c.stop(),
        }[event]
        return build(reference), build(fast_codec)

    script: list[tuple[str, object]] = [("connected", None), ("start", None)]
    for i in range(120):
        script.append(("media", payloads[i % len(payloads)]))
        if i % 17 == 5:
            script.append(("mark", f"reply#{i}:40"))
        if i % 29 == 3:
            script.append(("dtmf", "7"))
    script.append(("stop", None))
    for event, arg in script:
        want, got = both(event, arg)
        assert got == want, event


def test_a_stream_sid_that_needs_escaping_is_escaped_as_the_codec_escapes_it():
    sid = 'MZ"odd\\sid\u00e9'
    reference, fast = codec(sid), MediaFrames(codec(sid))
    assert fast.frame(base64.b64encode(b"\xff" * 160).decode(), 160) == reference.media(b"\xff" * 160)
