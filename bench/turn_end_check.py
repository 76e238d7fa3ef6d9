"""The offline semantic end-of-turn check: every recording under 10 s through the caller-audio path with the
turn-end policy (`ivr.turn_end`) and real Whisper, no call.

Conservative on purpose: a speculative transcript is taken as ready the moment it is asked for, so the policy ends
a turn at the earliest it ever could. A recording that becomes two utterances was split mid-sentence.
`python -m bench.turn_end_check` prints the table; `python -m bench` includes it in the results file.
`python -m bench.turn_end_check --pauses` lists every pause in those recordings instead: where it falls, how long
it lasts, what Whisper heard when `speculate_after_ms` of it had passed and how the words were judged -- the
evidence for where a turn may end on its words.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from bench.endpointing import OFFLINE_MAX_S
from bench.speech import SPEECH_DIR
from ivr.config import Settings

FRAME_S = 0.020


async def _one(settings: Settings, transcriber: Any, audio: bytes) -> tuple[int, list[str], list[float]]:
    """Utterances the recording became, how each ended, and the silence each waited (ms)."""
    from audio.caller import CallerAudio
    from audio.endpoint import SpeechEnded
    from audio.resample import resample
    from ivr.turn_end import TurnEnd
    from models.asr import Transcript

    async def transcribe(audio8k: np.ndarray, vocabulary: str | None) -> Transcript:
        audio16 = resample(audio8k.astype(np.float32) / 32768.0, 8000, 16000)
        result: Transcript = transcriber.transcribe(audio16, vocabulary=vocabulary)
        return result

    caller = CallerAudio(settings.audio.caller_audio())
    policy = TurnEnd(settings.turn_end, transcribe=transcribe, can_speculate=lambda: True)
    ended: list[tuple[str, int]] = []
    frames_seen = 0

    def end_now() -> None:
        ev = caller.end_utterance()
        if isinstance(ev, SpeechEnded):
            ended.append(("turn_end", frames_seen - 1 - ev.frame_index))
            policy.take_transcript()

    policy.on_complete = end_now
    for frame in caller.frames(audio):
        result = caller.process(frame)
        frames_seen += 1
        for ev in result.events:
            if isinstance(ev, SpeechEnded):
                ended.append((ev.reason, frames_seen - 1 - ev.frame_index))
                spec = policy.take_transcript()
                if spec is not None:
                    spec.cancel()
        policy.after_frame(caller, result.voiced)
        for _ in range(3):  # let a speculative transcription finish and be judged before the next frame
            await asyncio.sleep(0)
    return len(ended), [r for r, _ in ended], [w * FRAME_S * 1000 for _, w in ended]


def _rows(speech_dir: Path) -> list[dict[str, str]]:
    with open(speech_dir / "manifest.tsv", encoding="utf-8", newline="") as fh:
        return [r for r in csv.DictReader(fh, delimiter="\t") if float(r["duration_s"]) < OFFLINE_MAX_S]


def offline_turn_end_check(
    settings: Settings, transcriber: Any, speech_dir: Path = SPEECH_DIR
) -> dict[str, Any] | None:
    """Every recording under `OFFLINE_MAX_S` with the turn-end policy: splits, misses, how turns ended."""
    from audio.files import read_audio, to_phone

    if not (speech_dir / "manifest.tsv").is_file():
        return None
    rows = _rows(speech_dir)
    tail = b"\xff" * 8000 * 2
    split: list[str] = []
    missed = 0
    reasons: dict[str, int] = {}
    waits: list[float] = []
    for row in rows:
        audio = to_phone(read_audio(speech_dir / row["path"], 16000), 16000) + tail
        n, how, waited = asyncio.run(_one(settings, transcriber, audio))
        if n > 1:
            split.append(f"{Path(row['path']).stem} ({n}: {', '.join(how)})")
        missed += n == 0
        for r in how:
            reasons[r] = reasons.get(r, 0) + 1
        waits += waited
    return {
        "recordings": len(rows),
        "recordings_split": len(split),
        "split": split,
        "recordings_missed": missed,
        "turns_ended_by": reasons,
        "silence_waited_ms_median": round(statistics.median(waits), 1) if waits else None,
        "config": settings.turn_end.model_dump(),
    }


def pauses(settings: Settings, transcriber: Any, audio: bytes) -> list[dict[str, Any]]:
    """Every pause of `audio` long enough to speculate on: start (s), the speech before it (s), its length in ms
    (None: the recording ended in it), the words heard `speculate_after_ms` into it and their verdict."""
    from audio.caller import CallerAudio
    from audio.resample import resample
    from ivr.turn_end import judge

    caller = CallerAudio(settings.audio.caller_audio())
    caller.endpointer.set_silence_ms(60_000)  # one utterance for the whole recording: every pause is seen
    speculate_ms = settings.turn_end.speculate_after_ms
    found: list[dict[str, Any]] = []
    open_pause: dict[str, Any] | None = None
    silence = 0
    for i, frame in enumerate(caller.frames(audio)):
        result = caller.process(frame)
        ep = caller.endpointer
        if result.voiced and open_pause is not None:
            open_pause["pause_ms"] = silence  # the caller went on: this pause was mid-utterance
            open_pause = None
        silence = ep.trailing_silence_ms
        if not result.voiced and silence == speculate_ms and ep.will_be_utterance:
            so_far = ep.utterance_so_far()
            text = transcriber.transcribe(resample(so_far.astype(np.float32) / 32768.0, 8000, 16000)).text
            open_pause = {
                "at_s": round((i + 1) * FRAME_S - silence / 1000, 2),
                "speech_s": round(len(so_far) / 8000, 2),
                "pause_ms": None,
                "text": text,
                "verdict": judge(text),
            }
            found.append(open_pause)
    return found


def main() -> int:
    from audio.files import read_audio, to_phone
    from models.asr import Transcriber

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pauses", action="store_true", help="list every pause and what Whisper heard in it")
    args = parser.parse_args()
    settings = Settings()
    transcriber = Transcriber(settings.asr)
    if args.pauses:
        tail = b"\xff" * 8000
        for row in _rows(SPEECH_DIR):
            audio = to_phone(read_audio(SPEECH_DIR / row["path"], 16000), 16000)
            print(f"{Path(row['path']).stem} ({row['duration_s']} s)")
            for p in pauses(settings, transcriber, audio + tail):
                pause = "end" if p["pause_ms"] is None else f"{p['pause_ms']} ms"
                print(f"  at {p['at_s']:5.2f} s, pause {pause:>6}: {p['verdict']:10} {p['text']}")
        return 0
    result = offline_turn_end_check(settings, transcriber)
    print(result)
    return 0 if result is None or result["recordings_split"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
