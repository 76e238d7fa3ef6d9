import pytest

from audio.silence import SilenceTimer


def test_fires_once_when_the_caller_stays_silent_then_rearms_after_speech():
    timer = SilenceTimer(long_silence_s=1.0)
    fired = [timer.update(False) for _ in range(200)]  # 4 s of silence
    assert fired.count(True) == 1
    assert fired.index(True) == 49  # on the 50th frame: exactly 1.0 s
    assert timer.silence_s == pytest.approx(4.0)

    assert timer.update(True) is False
    assert timer.silence_s == 0.0
    fired = [timer.update(False) for _ in range(60)]
    assert fired.count(True) == 1


def test_short_pauses_between_words_never_fire():
    timer = SilenceTimer(long_silence_s=1.0)
    pattern = ([False] * 40 + [True] * 2) * 20
    assert not any(timer.update(v) for v in pattern)


def test_reset_rearms_without_speech():
    timer = SilenceTimer(long_silence_s=0.2)
    assert [timer.update(False) for _ in range(10)].count(True) == 1
    timer.reset()  # e.g. the bot just prompted "are you still there?"
    assert timer.silence_s == 0.0
    assert [timer.update(False) for _ in range(10)].count(True) == 1
