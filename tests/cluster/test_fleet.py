"""A fleet as a contact centre runs it: two `ivr serve` nodes sharing this machine's PostgreSQL and Redis,
HAProxy in front, the recording Twilio API behind. Calls are placed the way Twilio places them: the webhook
on one node, the media stream on another.

- a call whose media is on node A escalates; an agent connected to node B sees it within 1 s of A's own
  agents and accepts it; the transfer request for A's call reaches Twilio;
- a caller waiting in the queue hangs up on A; B's desk drops the entry within 1 s;
- a third node joining ends none of A's or B's live calls;
- node A is killed (-9) mid-call; B ends A's call with a reason that says so within 30 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from twilio.request_validator import RequestValidator

from ivr import agents as ag
from ivr.cluster import Cluster, prepare_database
from ivr.storage import Storage, utcnow
from telephony.simcaller import Pause, PressDigits, SimulatedCaller
from tests.conftest import API_TOKEN, AUTH_TOKEN, fresh_postgres_database
from tests.helpers.twilio_recorder import TwilioRecorder

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/7"  # a database of its own, flushed per run
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
LEASE_S = 3.0
ALICE = "+14155550001"
PASSWORD = "correct horse battery"
# A caller who knows the menu: 0 for a person, typed over the greeting (the menu takes keys typed ahead).
ASK_FOR_AGENT = [Pause(0.5), PressDigits("0")]


@pytest.fixture
def fleet_db() -> Iterator[str]:
    with fresh_postgres_database("ivr_fleet") as url:
        yield url


@pytest.fixture
async def recorder() -> AsyncIterator[TwilioRecorder]:
    rec = await TwilioRecorder().start()
    yield rec
    await rec.stop()


@pytest.fixture
def cluster(fleet_db: str, recorder: TwilioRecorder, tmp_path: Path, unused_tcp_port_factory: Any) -> Iterator[Cluster]:
    if not Path("/usr/sbin/haproxy").exists():
        pytest.skip("HAProxy not installed (apt-get install haproxy)")
    try:
        redis.Redis.from_url(REDIS_URL).flushdb()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379: {exc}")
    prepare_database(fleet_db)
    # The agent who will take the call, as `ivr agents add` makes the account; she is available.
    storage = Storage(fleet_db)
    ag.add_agent(storage, "alice", display_name="Alice", reach=ag.Reach.parse(ALICE), password=PASSWORD, now=utcnow())
    ag.set_status(storage, "alice", "available", now=utcnow())
    storage.dispose()
    fleet = Cluster(
        tmp_path / "cluster",
        fleet_db,
        REDIS_URL,
        lb_port=unused_tcp_port_factory(),
        env={
            "IVR_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "IVR_API_TOKEN": API_TOKEN,
            "IVR_TWILIO_API_BASE_URL": recorder.url,
            "IVR_CLUSTER__LEASE_S": str(LEASE_S),
            "IVR_CLUSTER__HEARTBEAT_S": "1",
            "IVR_LOG_LEVEL": "INFO",
            # The suite's phrase-embedding cache: the nodes start without re-embedding every flow's phrases.
            "IVR_INTENT_CACHE_DIR": str(ROOT / "data" / "intent-cache"),
            # These callers only press keys: recognition and speech in each node's own process are enough, and
            # three nodes starting six Whisper and six Piper worker processes would only slow the start on two cores.
            "IVR_ASR__PROCESSES": "0",
            "IVR_TTS__PROCESSES": "0",
        },
    )
    try:
        yield fleet
    finally:
        fleet.stop()


def start(fleet: Cluster, node_ids: list[str], ports: list[int]) -> None:
    """One after the other: the first renders the fixed prompts into the fleet's shared cache, the rest reuse it."""
    for node_id, port in zip(node_ids, ports, strict=True):
        fleet.start_node(node_id, port)
        fleet.wait_ready(180.0)


async def place_call(fleet: Cluster, *, webhook_node: str, media_node: str, steps: list[Any]) -> asyncio.Task[Any]:
    """Twilio's voice webhook reaches `webhook_node` (signed for the public URL, the balancer's), and the
    media stream the TwiML names is opened on `media_node`."""
    call_sid = "CA" + uuid.uuid4().hex
    form = {"CallSid": call_sid, "From": "+14155550123", "To": "+15550001111", "AccountSid": "ACtest"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"{fleet.url}/twilio/voice", form)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fleet.nodes[webhook_node].url}/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
        ) as resp:
            assert resp.status == 200, await resp.text()
            twiml = await resp.text()
    import xml.etree.ElementTree as ET

    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    media_url = fleet.nodes[media_node].url.replace("http://", "ws://") + "/twilio/media"
    caller = SimulatedCaller(media_url, call_sid=call_sid, custom_parameters=params)
    task = asyncio.create_task(caller.run(steps))
    task.call_sid = call_sid  # type: ignore[attr-defined]
    return task


class Desk:
    """An agent's live queue on one node (the WebSocket the desk page uses), with arrival times."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.snapshots: list[tuple[float, dict[str, Any]]] = []

    async def until(self, predicate: Any, timeout: float = 20.0) -> float:
        """Waits for a snapshot that satisfies `predicate`; returns when it arrived (monotonic)."""
        for at, snap in self.snapshots:
            if predicate(snap):
                return at
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            at = time.monotonic()
            self.snapshots.append((at, msg))
            if predicate(msg):
                return at


async def open_desk(http: aiohttp.ClientSession, fleet: Cluster, node: str) -> Desk:
    ws = await http.ws_connect(fleet.nodes[node].url.replace("http://", "ws://") + "/api/agent/ws", headers=BEARER)
    return Desk(ws)


def waiting(call_sid: str) -> Any:
    return lambda snap: any(i["call_sid"] == call_sid and i["status"] == "waiting" for i in snap.get("items", []))


def gone(call_sid: str) -> Any:
    return lambda snap: not any(i["call_sid"] == call_sid and i["status"] == "waiting" for i in snap.get("items", []))


async def call_record(fleet: Cluster, node: str, call_sid: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fleet.nodes[node].url}/api/calls/{call_sid}", headers=BEARER) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())


async def test_two_nodes_share_the_desk_and_survive_a_dead_node(
    cluster: Cluster, recorder: TwilioRecorder, fleet_db: str, unused_tcp_port_factory: Any
) -> None:
    await asyncio.to_thread(
        start, cluster, ["node-a", "node-b"], [unused_tcp_port_factory(), unused_tcp_port_factory()]
    )
    cluster.start_balancer()
    await asyncio.to_thread(cluster.wait_ready, 180.0)

    async with aiohttp.ClientSession() as http:
        desk_a, desk_b = await open_desk(http, cluster, "node-a"), await open_desk(http, cluster, "node-b")

        # 1. Media on A, webhook on B: the caller presses 0 for an agent; B's agents see it within 1 s of A's.
        first = await place_call(cluster, webhook_node="node-b", media_node="node-a", steps=[*ASK_FOR_AGENT, Pause(60)])
        seen_a = await desk_a.until(waiting(first.call_sid))  # type: ignore[attr-defined]
        seen_b = await desk_b.until(waiting(first.call_sid))  # type: ignore[attr-defined]
        assert seen_b - seen_a <= 1.0, f"node B's desk saw the escalation {seen_b - seen_a:.2f} s after node A's"
        item = next(i for _, s in desk_b.snapshots for i in s["items"] if i["call_sid"] == first.call_sid)  # type: ignore[attr-defined]

        # Alice, logged in on B, accepts; the transfer request for A's call reaches Twilio, dialling her reach.
        node_b = cluster.nodes["node-b"].url
        async with http.post(f"{node_b}/api/agent/login", json={"name": "alice", "password": PASSWORD}) as resp:
            assert resp.status == 200, await resp.text()
            alice = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        async with http.post(f"{node_b}/api/agent/escalations/{item['id']}/accept", headers=alice) as resp:
            assert resp.status == 200, await resp.text()
        transfer = recorder.find(f"Calls/{first.call_sid}.json")  # type: ignore[attr-defined]
        assert transfer and f">{ALICE}</Number>" in transfer[-1].form.get("Twiml", ""), transfer
        first.cancel()

        # 2. A caller waiting on A hangs up: B's desk drops the entry within 1 s of the hang-up.
        second = await place_call(cluster, webhook_node="node-a", media_node="node-a", steps=[*ASK_FOR_AGENT, Pause(3)])
        await desk_b.until(waiting(second.call_sid))  # type: ignore[attr-defined]
        await second
        hung_up = time.monotonic()
        dropped = await desk_b.until(gone(second.call_sid))  # type: ignore[attr-defined]
        assert dropped - hung_up <= 1.0, f"B's desk still showed the caller {dropped - hung_up:.2f} s after hang-up"

        # 3. Live calls on A and on B, both waiting for an agent; node C joins and ends none of them.
        hold = [*ASK_FOR_AGENT, Pause(240)]
        on_a = await place_call(cluster, webhook_node="node-b", media_node="node-a", steps=hold)
        on_b = await place_call(cluster, webhook_node="node-a", media_node="node-b", steps=hold)
        await desk_b.until(waiting(on_a.call_sid))  # type: ignore[attr-defined]
        await desk_b.until(waiting(on_b.call_sid))  # type: ignore[attr-defined]
        cluster.start_node("node-c", unused_tcp_port_factory())
        await asyncio.to_thread(cluster.wait_ready, 180.0)
        await asyncio.sleep(2.5)  # C has taken its lease and swept at least twice (heartbeat 1 s)
        for task in (on_a, on_b):
            record = await call_record(cluster, "node-c", task.call_sid)  # type: ignore[attr-defined]
            assert record["ended_at"] is None, record
        assert waiting(on_a.call_sid)(desk_b.snapshots[-1][1]), "node C's start took a caller out of the queue"  # type: ignore[attr-defined]

        # 4. kill -9 A mid-call: B ends A's call with a reason that says so, within 30 s; B's own call lives on.
        cluster.kill("node-a")
        killed = time.monotonic()
        while True:
            record = await call_record(cluster, "node-b", on_a.call_sid)  # type: ignore[attr-defined]
            if record["ended_at"] is not None:
                break
            assert time.monotonic() - killed < 30.0, "node A's call still open 30 s after A died"
            await asyncio.sleep(0.5)
        assert record["end_reason"] == "node_lost:node-a" and record["outcome"] == "error", record
        own = await call_record(cluster, "node-b", on_b.call_sid)  # type: ignore[attr-defined]
        assert own["ended_at"] is None, own
        # The dead node's caller no longer waits on the desk; B's caller still does.
        await desk_b.until(gone(on_a.call_sid), timeout=5.0)  # type: ignore[attr-defined]
        assert waiting(on_b.call_sid)(desk_b.snapshots[-1][1])  # type: ignore[attr-defined]
        # What an autoscaler reads off node B: which node, its calls, ASR backlog, CPU, what callers want.
        async with http.get(f"{cluster.nodes['node-b'].url}/metrics") as resp:
            metrics = await resp.text()
        for line in ('ivr_node_info{node_id="node-b"} 1.0', "ivr_active_calls 1.0", "ivr_asr_pending 0.0"):
            assert line in metrics, line
        assert "process_cpu_seconds_total" in metrics and "ivr_turn_intents_total{" in metrics
        on_a.cancel()
        on_b.cancel()
        await asyncio.gather(first, on_a, on_b, return_exceptions=True)
        await desk_a.ws.close()
        await desk_b.ws.close()

    storage = Storage(fleet_db)
    try:
        assert storage.open_call_owners() <= {"node-b"}
    finally:
        storage.dispose()
