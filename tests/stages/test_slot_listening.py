"""Slot-aware listening on real recordings through 8 kHz mu-law and webrtcvad: a step waiting for an order number
hears groups read with 700 ms pauses as one answer, where a conversational step would have cut them into three;
number words said in groups become one digit string; "yeah" answers a yes/no step; an answer the step can take
whole ends the wait for more."""

from __future__ import annotations

import numpy as np
import pytest

from audio import mulaw
from audio.caller import CallerAudio, CallerAudioConfig
from audio.endpoint import EndpointerConfig, SpeechEnded
from audio.resample import resample
from flows.actions import Listen, ValueShape
from flows.engine import spoken_alnum, spoken_number
from ivr.slot_listening import answer_is_whole, answers_yes_no, join_spoken_digits, silence_ms_for
from tests.helpers.speech import phone_pcm, silence

GROUPS = ("cmusphinx__001", "cmusphinx__003", "lhotse-speech__LJ002-0020")  # ~1-1.5 s each, like "A one zero"


def utterances(listen: Listen, pause_s: float) -> list[SpeechEnded]:
    """What a caller's audio becomes at a step that listens like `listen` (the server's 400 ms default)."""
    audio = CallerAudio(CallerAudioConfig(endpoint=EndpointerConfig(silence_ms=400)))
    audio.endpointer.set_silence_ms(silence_ms_for(listen))
    parts = [silence(0.5)]
    for name in GROUPS:
        parts += [phone_pcm(name), silence(pause_s)]
    parts.append(silence(2.5))
    wire = mulaw.encode(np.concatenate(parts))
    ended = []
    for frame in audio.frames(wire):
        ended += [e for e in audio.process(frame).events if isinstance(e, SpeechEnded)]
    return ended


def test_an_order_number_read_with_700ms_pauses_is_one_answer() -> None:
    at_order_step = utterances(Listen("both", slot="order_id", expects="order_number"), pause_s=0.7)
    assert len(at_order_step) == 1
    total = sum(len(phone_pcm(n)) for n in GROUPS) / 8000 + 2 * 0.7
    assert at_order_step[0].duration_s >= total - 0.6  # all three groups, not the last one alone


def test_the_same_pauses_at_a_conversational_step_are_three_turns() -> None:
    assert len(utterances(Listen("voice"), pause_s=0.7)) == 3


def test_a_long_pause_still_ends_the_order_number() -> None:
    assert len(utterances(Listen("both", expects="order_number"), pause_s=2.0)) == 3


@pytest.mark.parametrize(
    "said,language,digits",
    [
        ("four five six, seven eight nine", "en", "456789"),
        ("my order is one two three ... four five", "en", "my order is 12345"),
        ("uno dos tres cuatro", "es", "1234"),
        ("eins zwei drei", "de", "123"),
    ],
)
def test_spoken_digit_groups_become_one_digit_string(said: str, language: str, digits: str) -> None:
    assert join_spoken_digits(said, language) == digits


@pytest.mark.parametrize("said", ["yeah", "sure", "okay", "right", "yep"])
def test_yeah_answers_a_yes_no_step_but_is_a_backchannel_elsewhere(said: str) -> None:
    assert answers_yes_no(Listen("both", max_digits=1, finish_on="", expects="yes_no"), said)
    assert not answers_yes_no(Listen("voice"), said)


@pytest.mark.parametrize(
    "said,order_id",
    [("B two zero ... zero one", "B2001"), ("a one, zero zero one", "A1001"), ("order twenty thirty one", "2031")],
)
def test_an_order_number_said_in_groups_is_read_as_one_id(said: str, order_id: str) -> None:
    assert spoken_alnum(said) == order_id


def test_amounts_in_words_are_read_by_text2num() -> None:
    assert [spoken_number(t) for t in ("twenty five", "one hundred and fifty", "one", "nothing")] == [
        "25",
        "150",
        "1",
        None,
    ]


ORDER = Listen("both", slot="order_id", expects="order_number", shape=ValueShape("alnum", r"^[A-Z]?[0-9]{4,10}$", None))
ACCOUNT = Listen("both", slot="account", expects="digits", shape=ValueShape("digits", r"^[0-9]{8}$", 8))
MEMBER = Listen("both", slot="member", expects="digits", shape=ValueShape("digits", None, 6))


@pytest.mark.parametrize(
    "listen,said,whole",
    [
        (ACCOUNT, "4 5 6 7, 8 9 1 2.", True),  # all eight digits: nothing more can be added
        (ACCOUNT, "four five six seven", False),  # half of it: the caller is between groups
        (ACCOUNT, "4 5 6 7 8 9 1 2 3", False),  # too long: not an answer, let the step reject it after the pause
        (MEMBER, "one two three four five six", True),  # no pattern: the step's length says it is whole
        (MEMBER, "one two three", False),
        (ORDER, "A 1 0 0 1", False),  # a valid order number that another digit would keep valid
        (ORDER, "a one two three four five six seven eight nine zero", True),  # ten digits: the longest there is
        (ORDER, "my order is", False),
        (Listen("both", max_digits=1, finish_on="", expects="yes_no"), "Yeah, that's right.", True),
        (Listen("both", max_digits=1, finish_on="", expects="yes_no"), "I'm not sure", False),
        (Listen("voice"), "Yes.", False),  # not a yes/no step: the words alone decide (ivr/turn_end.judge)
        (Listen("both", max_digits=1, finish_on="", keys=("2", "3", "4")), "Two.", True),  # a menu's key
        (Listen("both", max_digits=1, finish_on="", keys=("2", "3", "4")), "option three please", True),
        (Listen("both", max_digits=1, finish_on="", keys=("2", "3", "4")), "9", False),  # not one of this menu's
        (Listen("both", max_digits=1, finish_on="", keys=("2", "3", "4")), "two or three", False),
        (Listen("both", max_digits=1, finish_on="", keys=("2", "3", "4")), "I have 2 orders", False),
    ],
)
def test_an_answer_is_whole_when_nothing_the_caller_adds_could_still_be_valid(listen, said, whole) -> None:
    assert answer_is_whole(listen, said) is whole


@pytest.mark.slow
@pytest.mark.parametrize(
    "listen,said,whole",
    [
        (ACCOUNT, "Four five six seven, eight nine one two.", True),
        (ACCOUNT, "My account number is four five six seven eight nine one two.", True),
        (ACCOUNT, "Four five six seven.", False),
        (ORDER, "A one two three four five six seven eight nine zero.", True),
        (Listen("both", max_digits=1, finish_on="", expects="yes_no"), "Yeah, that's right.", True),
    ],
)
async def test_what_whisper_writes_for_a_read_answer_is_judged_whole_as_the_words_were(
    shared_models, synth_phone, listen, said, whole
) -> None:
    # The Piper voice reads the answer over a phone line and real Whisper transcribes it, as in a call: Whisper
    # writes digits in groups ("4567 8 9 1 2"), drops the commas or hears "A" as "I"; the judgement must not care.
    pcm = mulaw.decode(synth_phone(said)).astype(np.float32) / 32768.0
    heard = await shared_models.asr.transcribe(resample(pcm, 8000, 16000), "test-slot")
    assert answer_is_whole(listen, heard.text) is whole, heard.text
