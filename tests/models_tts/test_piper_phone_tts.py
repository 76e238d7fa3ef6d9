"""Piper speech as a caller hears it: 8 kHz mu-law frames, streamed by sentence, cached, intelligible."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import jiwer
import numpy as np
import pytest
from tts_phone_checks import FRAME, frame_levels_dbfs, transcribe_phone

from models.speech_text import normalize_for_speech, split_sentences
from models.tts import Synthesizer, TtsConfig, TtsService

pytestmark = pytest.mark.slow

GREETING = "Thanks for calling. How can I help you today?"
REPLY = (
    "I found your order. It left our warehouse yesterday morning. "
    "It should arrive on 2026-11-24 before 3:30 pm. Is there anything else I can help with?"
)


@pytest.fixture
async def service(synth):
    svc = TtsService(synth, workers=1)
    yield svc
    await svc.close()


def _seconds(ulaw: bytes) -> float:
    return len(ulaw) / 8000


def test_phone_audio_is_whole_frames_of_audible_speech(synth) -> None:
    text = "Please tell me your order number, or say agent to speak with a person."
    ulaw = synth.synthesize_phone(text)
    assert len(ulaw) > 0 and len(ulaw) % FRAME == 0
    levels = frame_levels_dbfs(ulaw)
    # Speech, not silence or a click: most 20 ms frames well above the noise floor, peaks near full scale.
    assert np.mean(levels > -45) > 0.6
    assert levels.max() > -20
    # Piper's silent lead-in is trimmed: speech starts within the first two frames (Piper alone: 60 ms).
    assert np.argmax(levels > -45) <= 1
    # Plausible length: 14 words at a conversational 2-4.5 words per second.
    words = len(text.split())
    assert words / 4.5 < _seconds(ulaw) < words / 2.0
    # No dead air after the last word: at most a natural pause (Piper's tail trimmed to 200 ms, plus padding).
    trailing_quiet = int(np.argmax(levels[::-1] > -45))
    assert trailing_quiet * 0.02 <= 0.3


def test_phone_audio_matches_the_voice_rate_audio(synth) -> None:
    pcm = synth.synthesize(GREETING)
    assert pcm.dtype == np.int16 and synth.sample_rate == 22050
    ulaw = synth.synthesize_phone(GREETING)
    # Same speech at 8 kHz: durations agree to within the one frame of padding (plus Piper's own variation).
    assert abs(_seconds(ulaw) - len(pcm) / synth.sample_rate) < 0.25


def test_longer_text_takes_longer_to_say(synth) -> None:
    short = synth.synthesize_phone("Goodbye.")
    long = synth.synthesize_phone("Goodbye, and thank you for calling, we hope to hear from you again soon.")
    assert _seconds(long) > 3 * _seconds(short)


def test_nothing_to_say_gives_no_audio(synth) -> None:
    assert synth.synthesize_phone("   ") == b""


def test_missing_voice_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="voice"):
        Synthesizer(TtsConfig(voice_path=str(tmp_path / "nope.onnx")))


async def test_stream_yields_first_sentence_before_the_last_is_synthesized(synth, service) -> None:
    sentences = split_sentences(normalize_for_speech(REPLY))
    assert len(sentences) == 4
    arrivals: list[float] = []
    items: list[bytes] = []
    async for item in service.stream(REPLY):
        arrivals.append(time.monotonic())
        items.append(item)
    runs = list(synth.timings)[-len(sentences) :]
    assert [r.text for r in runs] == sentences  # one Piper run per sentence, in order
    assert len(items) == len(sentences)
    assert all(len(i) > 0 and len(i) % FRAME == 0 for i in items)
    # The caller hears sentence 1 while later sentences are still being made.
    assert arrivals[0] <= runs[-1].started
    assert arrivals[0] < runs[-1].ended
    assert all(a <= b for a, b in zip(arrivals, arrivals[1:], strict=False))


async def _synthesized_after_queue_drains(synth, service, since: int, sentences: list[str]) -> list[str]:
    """Which of ``sentences`` Piper ran since ``since``, once all work queued so far has finished.

    The service has one worker and a FIFO queue, so a render queued now completes after everything before it.
    """
    await service.render(f"Queue flushed {since}.")
    runs = list(synth.timings)[-(synth.synth_calls - since) :]
    return [r.text for r in runs if r.text in sentences]


async def test_closing_the_stream_stops_synthesis(synth, service) -> None:
    text = " ".join(f"This is sentence {w} of a long answer." for w in ("one", "two", "three", "four", "five", "six"))
    sentences = split_sentences(text)
    before = synth.synth_calls
    stream = service.stream(text)
    first = await anext(stream)
    assert len(first) % FRAME == 0
    await stream.aclose()  # barge-in
    done = await _synthesized_after_queue_drains(synth, service, before, sentences)
    # The first sentence plus at most the one synthesised ahead; never the remaining four.
    assert done[0] == sentences[0]
    assert len(done) <= 2


async def test_cancelling_the_consumer_stops_synthesis(synth, service) -> None:
    text = " ".join(f"Please hold while I check item {w}." for w in ("one", "two", "three", "four", "five"))
    sentences = split_sentences(text)
    before = synth.synth_calls
    got: list[bytes] = []

    async def play() -> None:
        async for item in service.stream(text):
            got.append(item)
            await asyncio.sleep(10)  # "playing" the sentence when the caller barges in

    task = asyncio.create_task(play())
    while not got:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = await _synthesized_after_queue_drains(synth, service, before, sentences)
    assert len(got) == 1
    assert len(done) <= 2


async def test_cached_prompt_costs_no_synthesis(synth, service) -> None:
    assert service.cached(GREETING) is None
    await service.warm([GREETING, "Goodbye."])
    before = synth.synth_calls
    hit = service.cached(GREETING)
    assert hit is not None and len(hit) % FRAME == 0
    assert await service.render(GREETING) == hit
    assert [item async for item in service.stream(GREETING)] == [hit]
    assert synth.synth_calls == before


async def test_cache_key_is_the_spoken_text(synth, service) -> None:
    rendered = await service.render("Your balance is $5.")
    before = synth.synth_calls
    assert service.cached("Your balance is 5 dollars.") == rendered
    assert synth.synth_calls == before


async def test_concurrent_renders_of_one_prompt_synthesize_once(synth, service) -> None:
    before = synth.synth_calls
    results = await asyncio.gather(*(service.render("Please hold.") for _ in range(4)))
    assert synth.synth_calls - before == 1
    assert len(set(results)) == 1


async def test_disk_cache_survives_a_new_service(synth, tmp_path) -> None:
    first = TtsService(synth, cache_dir=tmp_path)
    await first.warm([GREETING])
    await first.close()
    rendered = first.cached(GREETING)
    expected_name = hashlib.sha256(f"{synth.voice_name}\n{normalize_for_speech(GREETING)}".encode()).hexdigest()
    assert (tmp_path / f"{expected_name}.ulaw").read_bytes() == rendered

    before = synth.synth_calls
    second = TtsService(synth, cache_dir=tmp_path)  # e.g. after a restart: empty memory cache
    try:
        assert second.cached(GREETING) == rendered
        assert await second.render(GREETING) == rendered
        assert synth.synth_calls == before
    finally:
        await second.close()


async def test_truncated_disk_cache_file_is_rendered_again(synth, tmp_path) -> None:
    first = TtsService(synth, cache_dir=tmp_path)
    await first.warm(["Goodbye."])
    await first.close()
    (path,) = tmp_path.glob("*.ulaw")
    path.write_bytes(path.read_bytes()[:-7])  # a crash mid-write by some older process

    second = TtsService(synth, cache_dir=tmp_path)
    try:
        assert second.cached("Goodbye.") is None
        before = synth.synth_calls
        audio = await second.render("Goodbye.")
        assert synth.synth_calls - before == 1
        assert len(audio) % FRAME == 0 and path.read_bytes() == audio
    finally:
        await second.close()


def test_phone_speech_is_intelligible_to_whisper(synth, whisper) -> None:
    text = "Thank you for calling the delivery help line. Please tell me how I can help you today."
    heard = transcribe_phone(whisper, synth.synthesize_phone(text))
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    assert jiwer.wer(clean(text), clean(heard)) <= 0.15, heard


def test_normalized_money_and_dates_are_heard_correctly(synth, whisper) -> None:
    heard = transcribe_phone(whisper, synth.synthesize_phone("Your refund of $12.50 arrives on 2026-11-24."))
    digits = "".join(c for c in heard if c.isalnum() or c == " ").lower()
    assert "12" in digits and "50" in digits, heard
    assert "november" in digits and "24" in digits, heard


async def test_a_templated_reply_says_its_fixed_words_from_the_cache_and_is_heard_whole(synth, service, whisper):
    from flows.cli import load_flow
    from flows.schema import Template

    flow = load_flow(Path(__file__).resolve().parents[2] / "bench" / "flows" / "take_message.yaml")
    prompts = [p for start in flow.reply_starts() for p in service.lead_ins.add(start)]
    assert "Thanks, I have noted that you said," in prompts
    await service.warm(prompts)

    reply = Template(flow.steps["read_back"].text).render({"said": "my card was stolen yesterday"})
    lead_in, rest = service.lead_ins.split(split_sentences(normalize_for_speech(reply))[0])
    before = synth.synth_calls
    opening = await service.render_sentence(lead_in)
    assert opening == service.cached("Thanks, I have noted that you said,")
    assert synth.synth_calls == before  # the caller hears it at once ...
    words = await service.render_sentence(rest)
    assert (rest, synth.synth_calls) == ("my card was stolen yesterday.", before + 1)  # ... and only this is made
    # Said in two pieces, the reply is still heard as one sentence: Whisper tiny may mishear a word of the 12
    # ("stolen" as "still in"), but a lost piece would cost 5 or 7 of them.
    heard = transcribe_phone(whisper, opening + words)
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    assert jiwer.wer(clean(reply), clean(heard)) <= 0.25, heard


async def test_a_new_reply_is_rendered_before_sentences_whose_audio_is_needed_later(synth, service) -> None:
    # One worker, busy: a later sentence of one call's reply (4 s of its audio still to play) and the opening of
    # another call's reply (needed now) wait. The opening goes first, though it was asked for second.
    busy = asyncio.ensure_future(service.render_sentence("The line is busy while this sentence is rendered."))
    await asyncio.sleep(0)
    later = asyncio.ensure_future(service.render_sentence("and it arrives on Tuesday afternoon.", due_in_s=4.0))
    await asyncio.sleep(0)
    opening = asyncio.ensure_future(service.render_sentence("I found your order from last week"))
    await asyncio.gather(busy, later, opening)
    order = [t.text for t in list(synth.timings)[-3:]]
    assert order == [
        "The line is busy while this sentence is rendered.",
        "I found your order from last week",
        "and it arrives on Tuesday afternoon.",
    ]


async def test_a_reply_given_up_before_its_turn_is_never_rendered(synth, service) -> None:
    busy = asyncio.ensure_future(service.render_sentence("The line is busy while this sentence is rendered."))
    await asyncio.sleep(0)
    before = synth.synth_calls
    dropped = asyncio.ensure_future(service.render_sentence("The caller barged in before this was made."))
    await asyncio.sleep(0)
    dropped.cancel()
    await busy
    await asyncio.sleep(0.05)
    assert synth.synth_calls == before
    assert "The caller barged in before this was made." not in [t.text for t in synth.timings]


class _SlowVoice:
    """A stand-in voice: each rendering takes a tenth of a second per character (so says its estimate); the
    first waits until `release` is set, keeping the one worker busy while the others queue."""

    voice_name = "slow"

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.order: list[str] = []

    def render_estimate_s(self, text: str) -> float:
        return 0.1 * len(text)

    def synthesize_phone(self, sentence: str) -> bytes:
        if not self.order:
            self.release.wait(5)
        self.order.append(sentence)
        return b"\xff" * FRAME


async def test_a_long_sentence_starts_before_a_short_one_needed_a_little_sooner() -> None:
    # Due in 2.0 s but 2.7 s to render, the long sentence must start now; the short one (0.7 s to render, due in
    # 0.5 s) can wait for it. Ordered by need alone, the long one would start late and its caller hear a gap.
    voice = _SlowVoice()
    service = TtsService(voice, workers=1)  # type: ignore[arg-type]
    try:
        busy = asyncio.ensure_future(service.render_sentence("the worker is busy"))
        await asyncio.sleep(0.01)
        short = asyncio.ensure_future(service.render_sentence("a b c d", due_in_s=0.5))
        long = asyncio.ensure_future(service.render_sentence("one two three four five six", due_in_s=2.0))
        await asyncio.sleep(0.01)
        voice.release.set()
        await asyncio.gather(busy, short, long)
        assert voice.order == ["the worker is busy", "one two three four five six", "a b c d"]
    finally:
        await service.close()
