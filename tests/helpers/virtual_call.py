"""Whole calls on virtual time: the real `CallSession`, flow engine, escalation policy, storage schema, demo CRM
and HTTP backend gateway, with the slow or external parts replaced by deterministic fakes.

* `FakeAsr` hears what the test said the caller would say. Caller speech is a harmonic tone (webrtcvad calls
  every frame of it speech); each `VirtualCall.say()` gets its own pitch, and the fake ASR finds the pitch in the
  utterance audio it is given, so it answers for the right utterance even when one is never transcribed
  (PCI slots, noise). A `say()` can make its transcription fail or be refused as overload.
* `FakeTts` returns mu-law audio whose length follows the text (`ms_per_char`); every 20 ms frame carries a tag
  (which text, which frame), so a test can tell exactly what the caller heard and where a reply was cut.
* `RecordingTransport` records every outbound text frame with its loop time and decodes it; `VirtualCall` is
  the phone on the other end: it streams 20 ms media frames (silence unless the caller speaks), keys, marks
  echoed when the audio before them has played (at once on `clear`) and `stop`, as Twilio does.
* `VirtualCrm` is the demo CRM app (`flows/demo_crm.py`, its knobs and journal included) served in process, with
  no socket, to the real `HttpBackendGateway`; `FakeTwilioRest` records SMS and transfers.
* `SyncStorage` runs storage calls inline (SQLite file), so no executor thread moves virtual time.

Time: tests run under ``@pytest.mark.looptime``; the session's clock is the loop's clock and every wait
(`asyncio.sleep`, `call_later`, timeouts) is fast-forwarded when the loop is idle. A 30 s call takes a fraction
of a second and every latency is exact.

Sessions are built in one place, `make_session`; the phone speaks through `telephony.twilio.TwilioCallerCodec`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode, urlsplit

import numpy as np
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from audio import mulaw
from audio.vad import Vad
from flows.backends import BackendConfig, BackendMetrics, HttpBackendGateway
from ivr.config import Settings
from ivr.demo_crm import DemoCrmState, apply_control
from ivr.demo_crm import build_app as build_crm_app
from ivr.services import Models, Services, build_all
from ivr.session import CallSession
from ivr.storage import AsyncStorage, Storage
from ivr.storage_queue import SPOOL_FILE
from models.asr import AsrOverloaded, Transcript
from models.sentiment import SentimentScorer
from models.speech_text import LeadIns, normalize_for_speech, split_sentences
from telephony.events import Clear, Mark, OutboundCommand, PlayAudio
from telephony.twilio import TwilioCallerCodec, TwilioSerializer

FRAME = 160
FRAME_S = 0.020
SILENCE_FRAME = b"\xff" * FRAME
UNKNOWN = "+14155550199"  # not in the demo CRM
MARIA = "+14155550100"  # VIP, an espresso machine in transit
JAMES = "+14155550101"  # standard tier, only delivered orders; his card ends 1188
PRIYA = "+13125550103"  # VIP, card ending 7007


# ================================================================================================ caller audio
def voiced_audio(seconds: float, *, f0: float = 140.0, amplitude: float = 3000.0) -> bytes:
    """A harmonic tone as 8 kHz mu-law: webrtcvad (modes 0-3) calls every 20 ms frame of it speech."""
    n = int(round(seconds / FRAME_S)) * FRAME
    t = np.arange(n) / 8000.0
    sig = sum((amplitude / k) * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 12))
    return mulaw.encode(np.clip(sig, -32768, 32767).astype(np.int16))


def silence_audio(seconds: float) -> bytes:
    return SILENCE_FRAME * int(round(seconds / FRAME_S))


def noise_burst(seconds: float, *, level: float = 9000.0, seed: int = 7) -> bytes:
    """Loud white noise (a cough, a line pop) followed by one frame of silence."""
    rng = np.random.default_rng(seed)
    burst = rng.normal(0, level, int(seconds * 8000)).clip(-32768, 32767).astype(np.int16)
    return mulaw.encode(burst) + SILENCE_FRAME


# Pitches the fake ASR tells utterances apart by (12 Hz apart: resolved in the spectrum of a 0.5 s utterance).
PITCHES = tuple(float(f) for f in range(100, 400, 12))


def _pitch_of(audio16: np.ndarray) -> float | None:
    """The strongest spectral peak between 80 and 420 Hz of 16 kHz audio (the tone's fundamental)."""
    if audio16.size < 1600:
        return None
    spectrum = np.abs(np.fft.rfft(audio16 * np.hanning(audio16.size)))
    freqs = np.fft.rfftfreq(audio16.size, 1 / 16000)
    band = (freqs >= 80) & (freqs <= 420)
    if not band.any() or spectrum[band].max() <= 1e-3:
        return None
    return float(freqs[band][int(np.argmax(spectrum[band]))])


# ================================================================================================ fake ASR
@dataclass
class Heard:
    """What the fake ASR will answer for one utterance."""

    text: str = ""
    confidence: float = 0.95
    error: BaseException | None = None  # raised after the processing delay
    overloaded: bool = False  # refused at once, as AsrService does when its queue is full


@dataclass
class AsrCall:
    call_sid: str
    audio_s: float
    pitch: float | None
    answer: Heard
    at: float


class FakeAsr:
    """`models.asr.AsrService`'s interface: `await transcribe(audio16, call_sid) -> Transcript`, `pending`, `close`.

    Scripted two ways: `expect(text)` registers a pitch whose tone transcribes to `text` (what `VirtualCall.say`
    uses), and `will_hear(...)` queues answers for audio without a registered pitch (real recordings, noise).
    Audio nobody scripted transcribes to "" (what Whisper makes of a cough). Recognition takes `delay_s` of loop
    time, reported as the transcript's `asr_s`.
    """

    def __init__(self, *, delay_s: float = 0.3) -> None:
        self.delay_s = delay_s
        self.calls: list[AsrCall] = []
        self.vocabularies: list[str | None] = []  # what the recogniser was told to expect, per utterance
        self._by_pitch: dict[float, Heard] = {}
        self._next_pitch = 0
        self._fifo: deque[Heard] = deque()
        self._pending = 0
        self.closed = False

    def expect(self, answer: Heard) -> float:
        """Registers an answer and returns the pitch a caller's tone must have to get it."""
        pitch = PITCHES[self._next_pitch % len(PITCHES)]
        self._next_pitch += 1
        self._by_pitch[pitch] = answer
        return pitch

    def will_hear(self, *texts: str, confidence: float = 0.95) -> None:
        self._fifo.extend(Heard(t, confidence) for t in texts)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def has_idle_worker(self) -> bool:
        return not self.closed and self._pending == 0  # one worker, like the default AsrService

    def _answer_for(self, audio16: np.ndarray) -> tuple[float | None, Heard]:
        pitch = _pitch_of(audio16)
        if pitch is not None:
            near = min(self._by_pitch, key=lambda p: abs(p - pitch), default=None)
            if near is not None and abs(near - pitch) <= 4.0:
                return near, self._by_pitch[near]
        return pitch, (self._fifo.popleft() if self._fifo else Heard(""))

    async def transcribe(self, audio16: np.ndarray, call_sid: str, *, vocabulary: str | None = None) -> Transcript:
        self.vocabularies.append(vocabulary)
        if self.closed:
            raise RuntimeError("AsrService is closed")
        audio16 = np.asarray(audio16)
        if audio16.ndim != 1 or audio16.size == 0 or not np.issubdtype(audio16.dtype, np.floating):
            raise ValueError(f"ASR needs non-empty 1-D float audio at 16 kHz, got {audio16.dtype} {audio16.shape}")
        pitch, answer = self._answer_for(audio16)
        loop = asyncio.get_running_loop()
        self.calls.append(AsrCall(call_sid, audio16.size / 16000, pitch, answer, loop.time()))
        if answer.overloaded:
            raise AsrOverloaded("32 utterances already waiting for speech recognition")
        self._pending += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self._pending -= 1
        if answer.error is not None:
            raise answer.error
        return Transcript(
            text=answer.text,
            language="en",
            confidence=answer.confidence if answer.text else 0.0,
            no_speech_prob=0.0 if answer.text else 0.9,
            audio_s=audio16.size / 16000,
            asr_s=self.delay_s,
            path="fake",
        )

    async def close(self) -> None:
        self.closed = True


# ================================================================================================ fake TTS
_TAG = b"\x5a\xa5"
_FILLER = bytes((0x80 + i) % 256 for i in range(FRAME - 8))


@dataclass(frozen=True)
class SpokenFrame:
    text: str  # the sentence (or whole cached prompt) this frame belongs to
    index: int  # the frame's position in that text's audio


class FakeTts:
    """`models.tts.TtsService`'s interface (`cached`, `render`, `render_sentence`, `warm`, `stream`, `close`).

    Audio is `ms_per_char` of 20 ms frames per character of the spoken text; each frame is tagged so
    `FakeTts.describe(frame)` names the text and the frame's index. `render_sentence` and uncached `render` take
    `render_delay_s` of loop time; `warm` (fixed prompts, rendered before calls) takes none.
    """

    registry: dict[int, str] = {}  # crc32 -> text, shared: tags are deterministic

    def __init__(self, *, ms_per_char: float = 50.0, render_delay_s: float = 0.2) -> None:
        self.ms_per_char = ms_per_char
        self.render_delay_s = render_delay_s
        self._cache: dict[str, bytes] = {}
        self.lead_ins = LeadIns()
        self.rendered: list[str] = []  # sentences synthesised (not cached), in order
        self.due_in_s: list[float] = []  # how soon each sentence asked for was needed (the audio queued ahead of it)
        self._failures: deque[BaseException] = deque()

    def audio_for(self, text: str) -> bytes:
        crc = zlib.crc32(text.encode())
        FakeTts.registry[crc] = text
        frames = max(1, round(len(text) * self.ms_per_char / 1000 / FRAME_S))
        return b"".join(_TAG + struct.pack(">IH", crc, i) + _FILLER for i in range(frames))

    @staticmethod
    def describe(frame: bytes) -> SpokenFrame | None:
        if len(frame) != FRAME or not frame.startswith(_TAG):
            return None
        crc, index = struct.unpack(">IH", frame[2:8])
        text = FakeTts.registry.get(crc)
        return SpokenFrame(text, index) if text is not None else None

    def fail_next(self, times: int = 1, error: BaseException | None = None) -> None:
        """The next `times` syntheses raise (a crashed voice model)."""
        self._failures.extend([error or RuntimeError("piper crashed")] * times)

    def cached(self, text: str) -> bytes | None:
        return self._cache.get(normalize_for_speech(text))

    async def render_sentence(self, sentence: str, *, due_in_s: float = 0.0) -> bytes:
        self.due_in_s.append(due_in_s)
        await asyncio.sleep(self.render_delay_s)
        if self._failures:
            raise self._failures.popleft()
        self.rendered.append(sentence)
        return self.audio_for(sentence)

    async def render(self, text: str) -> bytes:
        spoken = normalize_for_speech(text)
        if spoken not in self._cache:
            await asyncio.sleep(self.render_delay_s)
            self._cache[spoken] = self.audio_for(spoken)
        return self._cache[spoken]

    async def warm(self, texts: Iterable[str]) -> None:
        for text in texts:
            spoken = normalize_for_speech(text)
            self._cache[spoken] = self.audio_for(spoken)

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        hit = self.cached(text)
        if hit is not None:
            yield hit
            return
        for sentence in split_sentences(normalize_for_speech(text)):
            yield await self.render_sentence(sentence)

    async def close(self) -> None:
        pass


# ================================================================================================ storage
class SyncStorage(AsyncStorage):
    """`AsyncStorage` whose queue is worked through inline on the loop: the same order of writes, spool, timeouts
    and retries (on loop time), and no storage thread to move virtual time."""

    _retry: asyncio.TimerHandle | None = None

    def _wake(self) -> None:
        if self._retry is not None:
            return  # the database is down: the retry timer works through the spool
        delay = self.queue.drain()
        if delay is not None:
            self._retry = asyncio.get_running_loop().call_later(delay, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._wake()

    def close(self, timeout_s: float | None = None) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self.sync.dispose()


# ================================================================================================ demo CRM, no socket
class _Content:
    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), n):
            yield self._body[i : i + n]


class _Response:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.content = _Content(body)

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Pending:
    def __init__(self, coro: Any) -> None:
        self._coro = coro

    async def __aenter__(self) -> _Response:
        return await self._coro

    async def __aexit__(self, *exc: object) -> None:
        return None


class _InProcessSession:
    """The slice of `aiohttp.ClientSession` that `HttpBackendGateway` uses, answered by an aiohttp app in process."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        app.freeze()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        allow_redirects: bool = True,
    ) -> _Pending:
        return _Pending(self._request(method, url, headers or {}, params, json))

    async def _request(
        self, method: str, url: str, headers: dict[str, str], params: dict[str, Any] | None, body: Any
    ) -> _Response:
        path = urlsplit(url).path + ("?" + urlencode(params) if params else "")
        hdrs = CIMultiDict(headers)
        payload: Any = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
            hdrs["Content-Length"] = str(len(data))
            payload = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
            payload.feed_data(data)
            payload.feed_eof()
        kwargs: dict[str, Any] = {"headers": hdrs, "app": self.app}
        if payload is not None:
            kwargs["payload"] = payload
        request = make_mocked_request(method, path, **kwargs)
        try:
            response = await self.app._handle(request)
        except web.HTTPException as exc:
            response = exc
        raw = getattr(response, "body", b"") or b""
        return _Response(response.status, raw if isinstance(raw, bytes) else bytes(raw))

    async def close(self) -> None:
        pass


class VirtualCrm:
    """The demo CRM (data, knobs, journal) answering the real HTTP gateway in process, on loop time."""

    def __init__(self) -> None:
        self.state = DemoCrmState.load()
        self.session = _InProcessSession(build_crm_app(self.state))

    def control(self, **knobs: Any) -> None:
        """As `POST /_control`: delay_ms, fail, fail_rate, fail_status, garbage."""
        self.state.knobs = apply_control(self.state.knobs, knobs)

    @property
    def journal(self) -> list[dict[str, str]]:
        return list(self.state.journal)


# ================================================================================================ Twilio REST
@dataclass
class FakeTwilioRest:
    """Records what `TwilioRest` would send: SMS (`send_sms`) and call transfers (`transfer`)."""

    sms: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)

    async def send_sms(self, to: str, body: str, *, from_: str, idempotency_key: str, **_: Any) -> str:
        self.sms.append({"to": to, "body": body, "from": from_, "key": idempotency_key})
        return f"SM{len(self.sms):032d}"

    async def transfer(self, call_sid: str, *, to_number: str | None = None, queue: str | None = None) -> dict:
        self.transfers.append({"call_sid": call_sid, "to": to_number, "queue": queue})
        return {"call_sid": call_sid, "status": "in-progress", "twiml": f"<Dial>{to_number}</Dial>", "attempts": 1}

    async def redirect(self, call_sid: str, twiml: str, *, what: str = "redirect") -> dict:
        """A live call's new TwiML (the desk's `<Dial>` to an agent); `to` is the dialled agent's reach."""
        import xml.etree.ElementTree as ET

        dial = ET.fromstring(twiml).find("Dial")
        target = next(iter(dial), None) if dial is not None else None
        self.transfers.append({"call_sid": call_sid, "to": None if target is None else target.text, "twiml": twiml})
        return {"call_sid": call_sid, "status": "in-progress", "twiml": twiml, "attempts": 1}


# ================================================================================================ services
@cache
def _intents() -> Any:
    from models.intent import IntentModels

    # Phrase embeddings are kept between test runs (data/, git-ignored): a flow is embedded once per machine.
    return IntentModels(cache_dir=Path(__file__).resolve().parents[2] / "data" / "intent-cache")


def intent_classifier() -> Any:
    """The real intent models (one per process; each flow's classifier is built on first use)."""
    return _intents()


@dataclass
class Harness:
    services: Services
    asr: FakeAsr
    tts: FakeTts
    crm: VirtualCrm
    twilio: FakeTwilioRest

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def error_count(self, kind: str) -> float:
        value = self.services.metrics.registry.get_sample_value("ivr_errors_total", {"kind": kind})
        return value or 0.0

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.services.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def call(self, from_number: str = UNKNOWN, **kwargs: Any) -> VirtualCall:
        return VirtualCall(self, from_number=from_number, **kwargs)

    async def close(self) -> None:
        for session in list(self.services.sessions.values()):
            await session.close("test_teardown")
        await self.services.close()


async def build_harness(
    data_dir: Path,
    *,
    asr: FakeAsr | None = None,
    tts: FakeTts | None = None,
    crm: VirtualCrm | None = None,
    budget_s: float = 2.0,
    database_url: str | None = None,
    threaded_storage: bool = False,
    **overrides: Any,
) -> Harness:
    """`ivr.services.build_all` with fake models, inline storage (a SQLite file under `data_dir`, or an emptied
    `database_url`), the in-process demo CRM behind the real HTTP gateway, and Twilio fakes."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "insecure_dev": True,
        "api_token": "test-api-token",
        "twilio_auth_token": None,
        "public_url": "http://ivr.test",
        "backends": {"crm": BackendConfig(base_url="http://crm.test", timeout_s=budget_s)},
    }
    values.update(overrides)
    settings = Settings(**values)
    asr = asr or FakeAsr()
    tts = tts or FakeTts()
    crm = crm or VirtualCrm()
    models = Models(asr=asr, tts=tts, intents=intent_classifier(), sentiment=SentimentScorer())  # type: ignore[arg-type]
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(database_url or f"sqlite:///{data_dir / 'ivr.sqlite3'}")
    if database_url:
        storage.drop_all()  # each test counts only its own calls
    storage.create_all()
    loop = asyncio.get_running_loop()
    gateway = HttpBackendGateway(
        settings.backends,
        session=crm.session,
        metrics=BackendMetrics(),
        clock=loop.time,  # type: ignore[arg-type]
    )
    twilio = FakeTwilioRest()
    # `threaded_storage`: the production storage thread (real time only: for a database that hangs).
    db = (
        AsyncStorage(storage, settings.storage, spool_path=data_dir / SPOOL_FILE)
        if threaded_storage
        else SyncStorage(storage, settings.storage)
    )
    services = await build_all(settings, models=models, db=db, gateway=gateway, twilio=twilio)
    return Harness(services, asr, tts, crm, twilio)


def make_session(services: Services, transport: Any, serializer: Any = None, **kwargs: Any) -> CallSession:
    """The one place tests build a `CallSession` (constructor changes are adapted here). The session's default
    clock is the running loop's, which is virtual under `@pytest.mark.looptime`."""
    serializer = serializer or TwilioSerializer(stream_secret=services.settings.twilio_auth_token)
    return CallSession(services, transport, serializer, **kwargs)


# ================================================================================================ the wire
NORMAL = 3000.0  # tone amplitude of conversational speech (about 68 dB SPL as the server estimates it)
LOUD = 12000.0  # shouting (about 80 dB SPL)


@dataclass
class CallerUtterance:
    """Something the caller said or played, with when its frames went down the line (loop time)."""

    label: str
    first_sent_at: float | None = None
    # By webrtcvad (mode 2) on every frame of the line, as the server's endpointer hears it: the verdict lingers
    # ~120 ms into the silence after a tone, so `last_voiced_at` is later than the utterance's last frame.
    first_voiced_at: float | None = None
    last_voiced_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Sent:
    t: float
    raw: str | bytes
    command: OutboundCommand


@dataclass
class HeardFrame:
    t: float  # when it started playing on the phone
    payload: bytes
    spoken: SpokenFrame | None
    flushed: bool = False  # dropped by a clear before it played


@dataclass
class Speech:
    """A stretch of one text the phone played without a break."""

    text: str
    start_t: float
    end_t: float
    first_index: int
    last_index: int


class RecordingTransport:
    """The session's transport: records every outbound text frame with its loop time; `close` ends the line."""

    def __init__(self, codec: TwilioCallerCodec, on_frame: Callable[[Sent], None]) -> None:
        self.sent: list[Sent] = []
        self.closed: tuple[float, int, str] | None = None
        self._codec = codec
        self._on_frame = on_frame

    async def send(self, frame: str | bytes) -> None:
        if self.closed is not None:
            return
        sent = Sent(asyncio.get_running_loop().time(), frame, self._codec.parse(frame))
        self.sent.append(sent)
        self._on_frame(sent)

    async def close(self, code: int, message: str) -> None:
        if self.closed is None:
            self.closed = (asyncio.get_running_loop().time(), code, message)


class VirtualCall:
    """A caller on a phone line: streams 20 ms frames, speaks, presses keys, hears the bot, hangs up."""

    def __init__(
        self,
        harness: Harness,
        *,
        from_number: str = UNKNOWN,
        call_sid: str | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.harness = harness
        self.services = harness.services
        self.asr = harness.asr
        self.tts = harness.tts
        n = len(self.services.sessions) + _next_id()
        self.call_sid = call_sid or f"CA{n:032x}"
        self.stream_sid = f"MZ{n:032x}"
        self.codec = TwilioCallerCodec(stream_sid=self.stream_sid, call_sid=self.call_sid, account_sid="AC" + "0" * 32)
        self.params = {"From": from_number, "CallSid": self.call_sid, **(params or {})}
        self.transport = RecordingTransport(self.codec, self._on_frame)
        self.session = make_session(self.services, self.transport)
        self.heard_frames: list[HeardFrame] = []
        self.timeline: list[tuple[float, str, str]] = []
        self.started_at = 0.0
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._speech: deque[tuple[CallerUtterance, bytes]] = deque()
        self._vad = Vad(2)
        self.utterances: list[CallerUtterance] = []
        self._play_clock = 0.0
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False
        self.stream_media = True

    # -- time and notes -----------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time() - self.started_at

    def note(self, who: str, what: str) -> None:
        self.timeline.append((round(self.now(), 3), who, what))

    def describe(self) -> str:
        return "\n".join(f"{t:8.3f}s {who:<6} {what}" for t, who, what in self.timeline)

    # -- the wire -----------------------------------------------------------------------------
    def send(self, raw: str | bytes) -> None:
        """Queues one frame from the carrier; frames reach the session in order, one at a time."""
        self._inbox.put_nowait(raw)

    async def _wire(self) -> None:
        while True:
            raw = await self._inbox.get()
            try:
                await self.session.on_message(raw)
            finally:
                self._inbox.task_done()

    async def _stream(self) -> None:
        """Media every 20 ms on the loop's clock, silence when the caller says nothing, like a live line."""
        loop = self.loop
        next_t = loop.time()
        while not self._stopped and not self.session.ended.is_set():
            next_t += FRAME_S
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            if self._stopped or self.session.ended.is_set():
                return
            if not self.stream_media:
                continue
            frame = SILENCE_FRAME
            now = loop.time()
            utterance = self.utterances[-1] if self.utterances else None
            if self._speech:
                utterance, frame = self._speech.popleft()
                utterance.first_sent_at = utterance.first_sent_at or now
                if not self._speech or self._speech[0][0] is not utterance:
                    utterance.done.set()
            # As the server's VAD hears the line: its verdict lingers a few frames into the silence after speech.
            if self._vad.is_speech(mulaw.decode(frame)) and utterance is not None:
                utterance.first_voiced_at = utterance.first_voiced_at or now
                utterance.last_voiced_at = now
            self.send(self.codec.media(frame))

    async def settle(self) -> None:
        """Until every queued frame has reached the session."""
        await self._inbox.join()

    # -- the phone's speaker ------------------------------------------------------------------
    def _on_frame(self, sent: Sent) -> None:
        t = sent.t
        cmd = sent.command
        if isinstance(cmd, PlayAudio):
            start = max(self._play_clock, t)
            for i in range(0, len(cmd.payload), FRAME):
                frame = cmd.payload[i : i + FRAME]
                self.heard_frames.append(HeardFrame(start, frame, FakeTts.describe(frame)))
                start += FRAME_S
            self._play_clock = start
        elif isinstance(cmd, Mark):
            due = self._play_clock
            if due <= t:
                self._echo_mark(cmd.name)
            else:
                self._pending_marks[cmd.name] = self.loop.call_at(due, self._echo_mark, cmd.name)
        elif isinstance(cmd, Clear):
            for frame in self.heard_frames:
                if frame.t >= t:
                    frame.flushed = True
            dropped = max(0.0, self._play_clock - t)
            self._play_clock = t
            self.note("server", f"clear ({dropped * 1000:.0f} ms of queued audio dropped)")
            for name, handle in list(self._pending_marks.items()):
                handle.cancel()
                self._echo_mark(name)

    def _echo_mark(self, name: str) -> None:
        self._pending_marks.pop(name, None)
        if not self._stopped:
            self.send(self.codec.mark(name))

    def bot_is_talking(self) -> bool:
        return self._play_clock > self.loop.time()

    # -- what the caller heard ----------------------------------------------------------------
    def played(self) -> list[HeardFrame]:
        """Frames that played (not flushed by a clear), in order."""
        return [f for f in self.heard_frames if not f.flushed]

    def speech(self) -> list[Speech]:
        """What played, as stretches of one text each (a break, a cut or another text starts a new one)."""
        out: list[Speech] = []
        for frame in self.played():
            if frame.spoken is None:
                continue
            last = out[-1] if out else None
            if (
                last is not None
                and last.text == frame.spoken.text
                and frame.spoken.index == last.last_index + 1
                and abs(frame.t - (last.end_t)) < 1e-6
            ):
                last.last_index = frame.spoken.index
                last.end_t = frame.t + FRAME_S
            else:
                out.append(
                    Speech(frame.spoken.text, frame.t, frame.t + FRAME_S, frame.spoken.index, frame.spoken.index)
                )
        return out

    def heard_text(self, since: float = float("-inf")) -> str:
        """Every text the caller heard (at least one frame of) since `since` (loop time), in order, joined."""
        texts: list[str] = []
        for s in self.speech():
            if s.start_t >= since and (not texts or texts[-1] != s.text):
                texts.append(s.text)
        return " ".join(texts)

    def sent_commands(self, kind: type) -> list[Sent]:
        return [s for s in self.transport.sent if isinstance(s.command, kind)]

    def clears(self) -> list[float]:
        return [s.t for s in self.sent_commands(Clear)]

    def media_times(self) -> list[float]:
        return [s.t for s in self.sent_commands(PlayAudio)]

    # -- the caller's actions -------------------------------------------------------------------
    async def start(self, *, connected: bool = True) -> VirtualCall:
        self.started_at = self.loop.time()
        self._tasks.append(asyncio.ensure_future(self._wire()))
        if connected:
            self.send(self.codec.connected())
        self.send(self.codec.start(self.params))
        self.note("caller", f"start call {self.call_sid} from {self.params.get('From')}")
        self._tasks.append(asyncio.ensure_future(self._stream()))
        await self.settle()
        return self

    async def say(
        self,
        text: str,
        *,
        seconds: float | None = None,
        loud: bool = False,
        asr_error: BaseException | None = None,
        overloaded: bool = False,
        confidence: float = 0.95,
    ) -> CallerUtterance:
        """Speaks `text` (a tone the fake ASR transcribes to it) and returns once its last frame was sent."""
        pitch = self.asr.expect(Heard(text, confidence, asr_error, overloaded))
        duration = seconds if seconds is not None else max(0.6, 0.3 * len(text.split()))
        audio = voiced_audio(duration, f0=pitch, amplitude=LOUD if loud else NORMAL)
        return await self.play(audio, f'says "{text}"{" (shouting)" if loud else ""}')

    async def play(self, audio: bytes, label: str = "plays audio") -> CallerUtterance:
        """Streams caller audio (8 kHz mu-law) in 20 ms frames; returns once its last frame was sent.

        Its `last_voiced_at` is final only once the VAD's hangover has passed (a few frames later)."""
        audio = audio + SILENCE_FRAME[: (-len(audio)) % FRAME]
        utterance = CallerUtterance(label)
        self.utterances.append(utterance)
        self.note("caller", f"{label} ({len(audio) / 8000:.2f} s)")
        self._speech.extend((utterance, audio[i : i + FRAME]) for i in range(0, len(audio), FRAME))
        await utterance.done.wait()
        return utterance

    async def press(self, digits: str, gap_s: float = 0.15) -> None:
        for digit in digits:
            self.send(self.codec.dtmf(digit))
            self.note("caller", f"presses {digit}")
            await asyncio.sleep(gap_s)

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> None:
        deadline = self.loop.time() + timeout_s
        while not predicate():
            if self.loop.time() > deadline:
                raise AssertionError(f"{self.call_sid}: no {what} within {timeout_s} s; the call:\n{self.describe()}")
            await asyncio.sleep(FRAME_S)

    async def wait_for_bot(self, quiet_s: float = 0.6, timeout_s: float = 60.0) -> float:
        """Until the bot has started a new reply and then stayed quiet for `quiet_s`; returns when it started."""
        already = len(self.heard_frames)

        def done() -> bool:
            if len(self.heard_frames) == already or self.bot_is_talking():
                return False
            return self.loop.time() - self._play_clock >= quiet_s or self.session.ended.is_set()

        await self.wait_for(done, timeout_s, "reply from the bot")
        return self.heard_frames[already].t

    async def wait_for_reply(self, heard_s: float = 0.5, timeout_s: float = 30.0) -> float:
        """Until `heard_s` of a reply that started after the caller's last input has played; returns its start."""
        since = self.loop.time()
        frames = int(round(heard_s / FRAME_S))

        def done() -> bool:
            new = [f for f in self.played() if f.t >= since and f.t + FRAME_S <= self.loop.time()]
            return len(new) >= frames

        await self.wait_for(done, timeout_s, "reply")
        return next(f.t for f in self.played() if f.t >= since)

    async def hang_up(self) -> None:
        if self._stopped or self.session.ended.is_set():
            return
        self.send(self.codec.stop())
        self.note("caller", "hangs up (stop)")
        await self.settle()
        self._stopped = True

    async def finish(self) -> dict[str, Any]:
        """Hangs up if the bot has not, waits for the session to end; returns the call's record."""
        await self.hang_up()
        await asyncio.wait_for(self.session.ended.wait(), 5.0)
        await self.settle()
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for handle in self._pending_marks.values():
            handle.cancel()
        return await self.record()

    async def record(self) -> dict[str, Any]:
        return await self.services.db.get_call(self.call_sid)

    def events(self, record: dict[str, Any], kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in record["events"] if e["kind"] == kind]


_ids = iter(range(1, 1 << 60))


def _next_id() -> int:
    return next(_ids)


__all__ = [
    "FakeAsr",
    "FakeTts",
    "FakeTwilioRest",
    "Harness",
    "Heard",
    "JAMES",
    "MARIA",
    "PRIYA",
    "CallerUtterance",
    "RecordingTransport",
    "SyncStorage",
    "UNKNOWN",
    "VirtualCall",
    "VirtualCrm",
    "build_harness",
    "make_session",
    "noise_burst",
    "silence_audio",
    "voiced_audio",
]
