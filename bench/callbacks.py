"""How late booked callbacks are placed when many fall due at once (real time, real storage and twilio library).

    python -m bench.callbacks [--counts 1 20 100]

For each count, that many callbacks are booked for the same moment T (3 s ahead) in a fresh SQLite file; the
dialler (`ivr.callback_dialler`) runs on the loop's real clock and places them through the twilio library
against a local stand-in for Twilio's API, which notes when each `calls.create` arrives. Prints, per count,
how long after T the first and the last call reached "Twilio".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from ivr.callback_dialler import CallbackDialler
from ivr.callbacks import CallbackService
from ivr.clock import LoopClock
from ivr.storage import AsyncStorage, Storage
from telephony.twilio_rest import TwilioRest


async def _fake_twilio(arrivals: list[float]) -> tuple[web.AppRunner, str]:
    async def create(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        sid = "CA" + secrets.token_hex(16)
        return web.json_response({"sid": sid, "status": "queued"}, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account}/Calls.json", create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def measure(count: int, data_dir: Path) -> dict[str, float]:
    arrivals: list[float] = []
    runner, url = await _fake_twilio(arrivals)
    sync = Storage(f"sqlite:///{data_dir / f'callbacks-{count}.sqlite3'}")
    sync.create_all()
    storage = AsyncStorage(sync)
    twilio = TwilioRest("AC" + "0" * 32, "token", api_base_url=url)
    service = CallbackService(storage, twilio, "https://ivr.example.test", "+14155550100")
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    for i in range(count):
        await storage.add_callback(
            call_sid=None,
            customer_id=None,
            phone=f"+1213555{i:04d}",
            token=secrets.token_urlsafe(24),
            idempotency_key=f"bench-{i}",
            status="booked",
            scheduled_for=due,
            created_at=datetime.now(UTC),
            payload={},
        )
    dialler = CallbackDialler(service, clock=LoopClock(), insecure_dev=True)
    mono_due = time.monotonic() + (due - datetime.now(UTC)).total_seconds()
    task = asyncio.ensure_future(dialler.run())
    deadline = time.monotonic() + 60 + count
    while len(arrivals) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await runner.cleanup()
    storage.close()
    if len(arrivals) < count:
        raise RuntimeError(f"only {len(arrivals)} of {count} callbacks placed")
    return {
        "callbacks": count,
        "first_after_due_ms": round((arrivals[0] - mono_due) * 1000, 1),
        "last_after_due_ms": round((arrivals[-1] - mono_due) * 1000, 1),
        "per_call_ms": round((arrivals[-1] - arrivals[0]) * 1000 / max(1, count - 1), 1),
    }


async def main(counts: list[int]) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [await measure(n, Path(tmp)) for n in counts]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 20, 100])
    for row in asyncio.run(main(parser.parse_args().counts)):
        print(json.dumps(row))
