"""`make demo`: start the server as its own process and play a simulated phone call through it.

Everything is real and local: the demo CRM is an HTTP service, the server is `ivr serve` with a
Twilio auth token (so the webhook signature and the per-call stream token are checked), the caller
fetches TwiML from the signed webhook like Twilio does, then speaks (Piper voice) over the Media
Streams protocol in real time. The caller asks for a person: an agent account made with
`ivr agents add` logs in on the desk API, accepts the call, and the demo plays Twilio's part of the
transfer (a local stand-in for Twilio's REST API takes the `<Dial>`, fetches the signed whisper the
agent hears, reports the bridged call's end); the agent wraps up and the disposition lands in the CRM.
The call record is read back from the records API at the end, and the server is stopped with
SIGTERM, which drains it.
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
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from audio import mulaw
from audio.files import write_wav
from ivr.config import Settings
from telephony.simcaller import Pause, PressDigits, SayText, SimulatedCaller, WaitForBot, fetch_twiml

AUTH_TOKEN = "demo-auth-token-not-a-real-secret"
API_TOKEN = "demo-api-token"
CALLER = "+14155550100"  # Maria in the demo CRM: a VIP with an order in transit
AGENT, AGENT_PASSWORD, AGENT_REACH = "demo-agent", "demo-agent-password", "+14155550142"


class TwilioStandIn:
    """Twilio's REST API for the demo: takes the desk's call update (the `<Dial>` to the agent) and answers
    as Twilio does, so the demo can then play the carrier's side of the transfer."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, str]] = []  # (call sid, TwiML)
        self.updated = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{sid}.json", self._update)
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._sms)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def _update(self, request: web.Request) -> web.Response:
        form = await request.post()
        sid = request.match_info["sid"]
        self.updates.append((sid, str(form.get("Twiml", ""))))
        self.updated.set()
        return web.json_response({"sid": sid, "status": "in-progress"})

    async def _sms(self, request: web.Request) -> web.Response:
        form = await request.post()
        print(f"   Twilio stand-in: SMS to {str(form.get('To', ''))[:-4]}****: {form.get('Body')!r}", flush=True)
        return web.json_response({"sid": "SM" + secrets.token_hex(16), "status": "queued"}, status=201)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def twilio_webhook(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> str:
    """POSTs a webhook as Twilio does: form-encoded, signed with the account's auth token."""
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as resp:
        resp.raise_for_status()
        return await resp.text()


async def agent_takes_the_call(base: str) -> dict[str, str]:
    """The agent logs in, sets themselves available and accepts the first caller who reaches the desk."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/agent/login", json={"name": AGENT, "password": AGENT_PASSWORD}) as resp:
            resp.raise_for_status()
            headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        async with http.post(f"{base}/api/agent/status", json={"status": "available"}, headers=headers) as resp:
            resp.raise_for_status()
        print(f"== agent {AGENT} logged in on the desk and is available", flush=True)
        while True:
            async with http.get(f"{base}/api/agent/queue", headers=headers) as resp:
                items = (await resp.json())["items"]
            if items:
                break
            await asyncio.sleep(0.3)
        item = items[0]
        print(
            f"   the desk shows: {item['trigger_words']} - {item['reason']!r}; "
            f"{item.get('customer_name') or 'unidentified'} {item.get('caller_masked') or ''}, "
            f"{item.get('customer_tier') or '-'} tier, queue {item['queue']}",
            flush=True,
        )
        async with http.post(f"{base}/api/agent/escalations/{item['id']}/accept", headers=headers) as resp:
            accepted = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"accept failed: {accepted.get('error')}")
        print(f"   Accept: the server dials {AGENT_REACH} into the call (leg {accepted['leg_id']})", flush=True)
        return headers


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


async def bridge_and_wrap_up(
    base: str, call_sid: str, twilio: TwilioStandIn, agent: dict[str, str], crm_port: int
) -> None:
    """Twilio's side of the transfer, then the agent's wrap-up, then what the CRM holds."""
    sid, twiml = twilio.updates[-1]
    dial = ET.fromstring(twiml).find("Dial")
    assert dial is not None and sid == call_sid
    number = next(iter(dial))
    print(f"== Twilio got <Dial action=...><{number.tag} url=whisper>{number.text}</{number.tag}> for the call")
    async with aiohttp.ClientSession() as http:
        brief = await twilio_webhook(
            http, number.get("url", ""), {"CallSid": "CA" + "0" * 32, "CallStatus": "in-progress"}
        )
        print(f"   the agent answers and hears, before the bridge: {ET.fromstring(brief).findtext('Say')!r}")
        print("   then the caller is bridged to the agent; they talk for 95 s; the agent hangs up")
        done = await twilio_webhook(
            http,
            dial.get("action", ""),
            {"CallSid": call_sid, "CallStatus": "in-progress", "DialCallStatus": "completed", "DialCallDuration": "95"},
        )
        print(f"   the caller hears: {ET.fromstring(done).findtext('Say')!r}")
        async with http.get(f"{base}/api/agent/me", headers=agent) as resp:
            me = await resp.json()
        print(f"== the agent is in {me['agent']['status']}; the wrap-up form is on the desk")
        wrap = {"disposition": "resolved", "notes": "Parcel ORD-1001 rerouted; courier calls before delivery."}
        async with http.post(f"{base}/api/agent/legs/{me['leg']['id']}/wrapup", json=wrap, headers=agent) as resp:
            leg = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"wrap-up failed: {leg.get('error')}")
        print(f"   wrap-up saved: {leg['disposition']!r}, CRM write {leg['crm_status']!r}")
        customer = ((me.get("call") or {}).get("customer_id")) or "C1001"
        async with http.get(f"http://127.0.0.1:{crm_port}/customers/{customer}/interactions") as resp:
            for interaction in await resp.json():
                print(f"   in the CRM for {customer}: {interaction}")


async def main() -> int:
    data_dir = Path("data/demo").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    crm_port, port, twilio_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IVR_PUBLIC_URL": base,
        "IVR_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "IVR_API_TOKEN": API_TOKEN,
        "IVR_DATA_DIR": str(data_dir),
        "IVR_FLOW": "ecommerce_delivery",
        "IVR_BACKENDS__CRM__BASE_URL": f"http://127.0.0.1:{crm_port}",
        "IVR_TWILIO_API_BASE_URL": f"http://127.0.0.1:{twilio_port}",  # nothing leaves this machine
        "IVR_DRAIN_DEADLINE_S": "5",
    }
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "ivr.cli",
            "agents",
            "add",
            AGENT,
            "--display-name",
            "Demo Agent",
            "--reach",
            AGENT_REACH,
            "--password-stdin",
        ],
        input=AGENT_PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0 and "already exists" not in made.stderr:
        raise RuntimeError(f"ivr agents add failed: {made.stderr.strip()}")
    print(f"== agent account {AGENT} (reach {AGENT_REACH}) made with `ivr agents add`", flush=True)
    twilio = TwilioStandIn()
    await twilio.start(twilio_port)
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
        agent = asyncio.create_task(agent_takes_the_call(base))
        result = await caller.run(
            [
                # The menu is long; a caller who knows what they want presses 1 during it (barge-in).
                WaitForBot(timeout_s=4.0),
                PressDigits("1"),
                WaitForBot(timeout_s=25.0),
                SayText("I want to speak to a real person."),
                WaitForBot(timeout_s=15.0),
                Pause(2.0),
            ]
        )
        agent_headers = await asyncio.wait_for(agent, timeout=30.0)
        await asyncio.wait_for(twilio.updated.wait(), timeout=10.0)
        await bridge_and_wrap_up(base, call_sid, twilio, agent_headers, crm_port)
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
        ok = record["ended_at"] is not None and bool(record["turns"]) and record["end_reason"] == "transferred_to_agent"
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
        await twilio.stop()
        print(f"   server exited with {server.returncode}")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
