import numpy as np
import pytest

from audio import mulaw

audioop = pytest.importorskip("audioop")  # stdlib on 3.11; `audioop-lts` on 3.13+


def test_decode_matches_g711_reference_for_all_256_codes():
    codes = bytes(range(256))
    ours = mulaw.decode(codes)
    ref = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype=np.int16)
    assert ours.dtype == np.int16
    np.testing.assert_array_equal(ours, ref)


def test_encode_matches_g711_reference_for_every_int16_value():
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert mulaw.encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)


def test_silence_byte_decodes_to_zero_and_zero_encodes_to_it():
    assert mulaw.decode(bytes([mulaw.SILENCE_BYTE]))[0] == 0
    assert mulaw.encode(np.zeros(1, dtype=np.int16)) == bytes([mulaw.SILENCE_BYTE])


def test_round_trip_of_a_real_recording_keeps_the_signal(speech_dir):
    from tests.helpers.speech import phone_recording

    payload = phone_recording("coqui-ai__LJ001-0013")
    pcm = mulaw.decode(payload)
    assert len(payload) % mulaw.FRAME_BYTES == 0
    # Decoded values are exactly representable, so re-encoding is lossless.
    assert mulaw.encode(pcm) == payload


def test_encode_rejects_float_audio_instead_of_garbling_it():
    with pytest.raises(TypeError, match="int16"):
        mulaw.encode(np.zeros(160, dtype=np.float32))
