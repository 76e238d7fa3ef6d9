"""`make demo`: start the server as its own process and play a simulated phone call through it.

Everything is real and local: the demo CRM is an HTTP service, the server is `ivr serve` with a
Twilio auth token (so the webhook signature and the per-call stream token are checked), the caller
fetches TwiML from the signed webhook like Twilio does, then speaks (Piper voice) over the Media
Streams protocol in real time. The call record is read back from the records API at the end, and
the server is stopped with SIGTERM, which drains it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from audio import mulaw
from audio.files import write_wav
from ivr.config import Settings
from telephony.simcaller import PressDigits, SayText, SimulatedCaller, WaitForBot, fetch_twiml

AUTH_TOKEN = "demo-auth-token-not-a-real-secret"
API_TOKEN = "demo-api-token"
CALLER = "+14155550100"  # Maria in the demo CRM: a VIP with an order in transit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("the server did not become healthy in time")


async def main() -> int:
    data_dir = Path("data/demo").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    crm_port, port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IVR_PUBLIC_URL": base,
        "IVR_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "IVR_API_TOKEN": API_TOKEN,
        "IVR_DATA_DIR": str(data_dir),
        "IVR_FLOW": "ecommerce_delivery",
        "IVR_BACKENDS__CRM__BASE_URL": f"http://127.0.0.1:{crm_port}",
        "IVR_TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nothing leaves this machine
        "IVR_DRAIN_DEADLINE_S": "5",
    }
    print(f"== starting the demo CRM on :{crm_port} and the IVR server on :{port}", flush=True)
    crm = subprocess.Popen([sys.executable, "-m", "ivr.demo_crm", "--host", "127.0.0.1", "--port", str(crm_port)])
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ivr.cli",
            "--log-level",
            "WARNING",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{crm_port}/healthz", crm)
        await wait_healthy(f"{base}/healthz", server)
        print("== server healthy; placing a call through the signed voice webhook", flush=True)
        call_sid = "CA" + secrets.token_hex(16)
        ws_url, params = await fetch_twiml(
            f"{base}/twilio/voice", {"CallSid": call_sid, "From": CALLER, "To": "+15550001111"}, AUTH_TOKEN
        )
        print(f"   TwiML: <Connect><Stream url={ws_url!r}> with parameters {sorted(params)}", flush=True)

        from models.tts import Synthesizer

        voice = Synthesizer(Settings().tts)
        caller = SimulatedCaller(
            ws_url,
            call_sid=call_sid,
            from_number=CALLER,
            custom_parameters=params,
            synthesize=voice.synthesize_phone,
            log=lambda line: print(line, flush=True),
        )
        result = await caller.run(
            [
                # The menu is long; a caller who knows what they want presses 1 during it (barge-in).
                WaitForBot(timeout_s=4.0),
                PressDigits("1"),
                WaitForBot(timeout_s=25.0),
                SayText("No, that's all, thanks."),
                WaitForBot(timeout_s=15.0),
            ]
        )
        wav = Path("demo-call.wav")
        write_wav(wav, mulaw.decode(result.received), 8000)

        print()
        lat = sorted(result.response_latencies_s)
        if lat:
            print(
                f"   response latency (caller's last voiced frame -> first reply frame): "
                f"median {1000 * lat[len(lat) // 2]:.0f} ms over {len(lat)} turns"
            )
        if result.first_audio_after_start_s is not None:
            print(f"   first greeting frame {1000 * result.first_audio_after_start_s:.0f} ms after start")
        print(f"   what the caller heard is in {wav}")

        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            async with http.get(f"{base}/api/calls/{call_sid}") as resp:
                record = await resp.json()
            async with http.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
        print("\n== the call's record (GET /api/calls/{call_sid})")
        print(
            f"   outcome {record['outcome']!r}, ended by {record['end_reason']!r}, "
            f"first response {record['first_response_ms']:.0f} ms after start"
        )
        for turn in record["turns"]:
            stages = turn.get("latency") or {}
            parts = ", ".join(f"{k} {v:.0f} ms" for k, v in stages.items() if isinstance(v, (int, float)))
            understood = f" -> intent {turn['intent']} ({turn['confidence']:.2f})" if turn["intent"] else ""
            print(f"   caller ({turn['channel']}): {turn['text']!r}{understood}")
            print(f"   bot: {turn['reply']!r}")
            if parts:
                print(f"        latency: {parts}")
        print("\n== a few metrics (GET /metrics)")
        for line in metrics.splitlines():
            if line.startswith(
                (
                    "ivr_calls_total",
                    "ivr_frames_out_total",
                    "ivr_calls_ended_total",
                    "ivr_barge_ins_total",
                    "ivr_backend_requests_total",
                )
            ):
                print("   " + line)
        ok = record["ended_at"] is not None and bool(record["turns"])
        print("\n== stopping the server with SIGTERM (it drains, then exits)")
        return 0 if ok else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        crm.terminate()
        crm.wait(timeout=10)
        print(f"   server exited with {server.returncode}")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
