"""A simulated caller that speaks the Media Streams protocol the way Twilio does.

It can fetch TwiML from the voice webhook (signed like Twilio signs it), then opens the stream
WebSocket and sends `connected`, `start`, and `media` at real-time pace (20 ms frames, silence
when the caller says nothing, exactly as Twilio streams a live line), `dtmf` digits and `stop`.
It plays back what the server sends as a phone would: a buffer drained at real time, marks echoed
when the audio before them has played (or at once on `clear`), and records it to a WAV file.
The timeline says what was heard, what was sent and how long the bot took to answer.
Frames are built and parsed by `telephony.twilio.TwilioCallerCodec`, except the 50 `media` frames a second, which
`MediaFrames` fills into a template (a test holds them byte for byte equal to the codec's).

The simulated callers share a machine with the server they measure (the benchmark), so each costs as little as it
can: one 20 ms timer callback per call drives everything periodic (the frame, the marks whose audio has played,
the end of a wait for the bot), on a `telephony.wsline.WebSocketLine` that writes a frame in the call that sends
it and hands over each message as it is parsed: no task, coroutine or lock per frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio import mulaw
from audio.vad import Vad
from telephony import events
from telephony.twilio import TwilioCallerCodec
from telephony.wsline import WebSocketLine

FRAME = 160
FRAME_S = 0.02
SILENCE_FRAME = b"\xff" * FRAME
SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")


@dataclass(frozen=True)
class SayText:
    text: str


@dataclass(frozen=True)
class PlayAudio:
    """Caller speech as 8 kHz mu-law bytes (a recording or synthesized speech)."""

    audio: bytes
    label: str = "audio"


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class PressDigits:
    digits: str
    gap_s: float = 0.15


@dataclass(frozen=True)
class WaitForBot:
    """Wait until the bot has started and then finished talking (no audio queued for `quiet_s`)."""

    timeout_s: float = 15.0
    quiet_s: float = 0.6


@dataclass(frozen=True)
class HangUp:
    pass


Step = SayText | PlayAudio | Pause | PressDigits | WaitForBot | HangUp


@dataclass
class TimelineEntry:
    t: float
    who: str  # caller | bot | server
    what: str

    def __str__(self) -> str:
        return f"{self.t:7.2f}s  {self.who:<6} {self.what}"


@dataclass
class BotSegment:
    start_t: float  # when the first frame arrived
    end_t: float  # when its audio finished playing
    frames: int
    audio: bytearray = field(default_factory=bytearray)


@dataclass
class CallResult:
    call_sid: str
    stream_sid: str
    timeline: list[TimelineEntry]
    received: bytes  # the bot's audio as the caller heard it (mu-law, gaps filled with silence)
    received_commands: list[events.OutboundCommand]  # every frame the server sent, decoded, in order
    protocol_errors: list[str]  # server frames Twilio would have refused (bad JSON, another stream's SID, ...)
    segments: list[BotSegment]
    response_latencies_s: list[float]
    replied_to_s: list[float]  # for each response latency: when the caller's utterance it answers ended
    first_audio_after_start_s: float | None
    clears: int
    marks_echoed: list[str]
    frame_arrivals: list[float]  # arrival time of every outbound media frame (relative to start)
    closed_by_server: bool

    def print_timeline(self, out: Callable[[str], None] = print) -> None:
        for entry in self.timeline:
            out(str(entry))
        if self.response_latencies_s:
            lat = sorted(self.response_latencies_s)
            out(
                f"response latency (last voiced frame sent -> first reply frame): "
                f"median {lat[len(lat) // 2] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms over {len(lat)} turns"
            )
        if self.first_audio_after_start_s is not None:
            out(f"first greeting frame {self.first_audio_after_start_s * 1000:.0f} ms after start")


async def fetch_twiml(webhook_url: str, params: dict[str, str], auth_token: str | None) -> tuple[str, dict[str, str]]:
    """POSTs to the voice webhook as Twilio would and returns the stream URL and its <Parameter>s."""
    import aiohttp
    from twilio.request_validator import RequestValidator

    headers = {}
    if auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(webhook_url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(webhook_url, data=params, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise RuntimeError(f"voice webhook answered {resp.status}: {body[:200]}")
    root = ET.fromstring(body)
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise RuntimeError(f"no <Connect><Stream> in TwiML: {body[:200]}")
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), parameters


class MediaFrames:
    """`TwilioCallerCodec.media` for one stream, from a template: the same text, a fifth of the CPU.

    A caller sends 50 of these a second, and `json.dumps` of the nested dict was most of the cost of building one.
    The sequence number is the codec's own, so media and every other frame the codec builds share one count.
    """

    def __init__(self, codec: TwilioCallerCodec) -> None:
        self._codec = codec
        self._stream_sid = json.dumps(codec.stream_sid)
        self._chunk = 0
        self._audio_ms = 0

    def frame(self, payload_b64: str, payload_bytes: int) -> str:
        """The frame for a payload given already base64-encoded (`payload_bytes`: its length in bytes)."""
        codec = self._codec
        codec.sequence_number += 1
        self._chunk += 1
        self._audio_ms += payload_bytes * 1000 // 8000
        return (
            f'{{"event": "media", "sequenceNumber": "{codec.sequence_number}", "media": {{"track": "inbound", '
            f'"chunk": "{self._chunk}", "timestamp": "{self._audio_ms}", "payload": "{payload_b64}"}}, '
            f'"streamSid": {self._stream_sid}}}'
        )


@dataclass
class _BotWait:
    """An open `wait_for_bot`, checked on each 20 ms tick."""

    frames_before: int
    quiet_s: float
    done: asyncio.Future[bool]


class SimulatedCaller:
    def __init__(
        self,
        url: str,
        *,
        call_sid: str | None = None,
        from_number: str = "+14155550100",
        custom_parameters: dict[str, str] | None = None,
        synthesize: Callable[[str], bytes] | None = None,
        account_sid: str = "AC" + "0" * 32,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.account_sid = account_sid
        self.custom_parameters = {"From": from_number, "CallSid": self.call_sid, **(custom_parameters or {})}
        self.synthesize = synthesize
        self.log = log
        self._codec = TwilioCallerCodec(stream_sid=self.stream_sid, call_sid=self.call_sid, account_sid=account_sid)
        self._media = MediaFrames(self._codec)
        self._t0 = 0.0
        self._timeline: list[TimelineEntry] = []
        # Speech waiting to be sent, one item per 20 ms frame: (base64 payload, its PCM for the VAD); None ends
        # an utterance.
        self._outgoing: deque[tuple[str, np.ndarray] | None] = deque()
        self._line: WebSocketLine | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self._bot_wait: _BotWait | None = None
        # Playback emulation: what the "phone" has buffered and when it will have played it.
        self._play_clock = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._received = bytearray()
        self._received_commands: list[events.OutboundCommand] = []
        self._protocol_errors: list[str] = []
        self._segments: list[BotSegment] = []
        self._frame_arrivals: list[float] = []
        self._last_voiced_sent: float | None = None
        self._awaiting_reply = False
        self._latencies: list[float] = []
        self._replied_to: list[float] = []
        self._first_audio: float | None = None
        self._clears = 0
        self._cleared = False
        self._marks_echoed: list[str] = []
        self._closed_by_server = False
        self._stopped = False
        self._speech_done = asyncio.Event()
        self._speech_done.set()
        self._vad = Vad(2)

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self._t0

    def _note(self, who: str, what: str) -> None:
        entry = TimelineEntry(round(self.now(), 3), who, what)
        self._timeline.append(entry)
        if self.log:
            self.log(str(entry))

    def _send(self, frame: str) -> None:
        """Written to the socket at once, so frames go out in the order they were built (and numbered).
        `ConnectionError` once the connection is closing."""
        if self._line is None:
            raise ConnectionError("not connected")
        self._line.send_text(frame)

    # -- protocol --------------------------------------------------------------------------
    async def run(self, steps: list[Step], *, connect_timeout: float = 10.0) -> CallResult:
        line = await WebSocketLine.connect(self.url, self._on_message, timeout_s=connect_timeout, max_size=2**24)
        line.closed.add_done_callback(self._on_closed)
        self._line = line
        try:
            self._t0 = time.monotonic()
            self._send(self._codec.connected())
            self._send(self._codec.start(self.custom_parameters))
            self._note("caller", f"start call {self.call_sid}")
            loop = asyncio.get_running_loop()
            self._next_tick = loop.time()
            self._tick = loop.call_at(self._next_tick, self._stream_media)
            try:
                for step in steps:
                    if self._closed_by_server:
                        break
                    await self._run_step(step)
                if not self._closed_by_server:
                    await self.hang_up()
            finally:
                self._tick.cancel()
                try:  # the server closes the stream after `stop`
                    await asyncio.wait_for(asyncio.shield(line.closed), timeout=2.0)
                except TimeoutError:
                    pass
        finally:
            await line.close()
        self._settle_playback(self.now() + 3600)
        return CallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            timeline=self._timeline,
            received=bytes(self._received),
            received_commands=self._received_commands,
            protocol_errors=self._protocol_errors,
            segments=self._segments,
            response_latencies_s=self._latencies,
            replied_to_s=self._replied_to,
            first_audio_after_start_s=self._first_audio,
            clears=self._clears,
            marks_echoed=self._marks_echoed,
            frame_arrivals=self._frame_arrivals,
            closed_by_server=self._closed_by_server,
        )

    async def _run_step(self, step: Step) -> None:
        if isinstance(step, SayText):
            if self.synthesize is None:
                raise RuntimeError("SayText needs a synthesizer (text-to-speech) for the simulated caller")
            audio = await asyncio.to_thread(self.synthesize, step.text)
            await self._speak(audio, f'says "{step.text}"')
        elif isinstance(step, PlayAudio):
            await self._speak(step.audio, f"plays {step.label}")
        elif isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, PressDigits):
            for digit in step.digits:
                self._send(self._codec.dtmf(digit))
                self._note("caller", f"presses {digit}")
                self._last_voiced_sent = self.now()
                self._awaiting_reply = True
                await asyncio.sleep(step.gap_s)
        elif isinstance(step, WaitForBot):
            await self.wait_for_bot(step.timeout_s, step.quiet_s)
        elif isinstance(step, HangUp):
            await self.hang_up()

    async def _speak(self, audio: bytes, what: str) -> None:
        self._speech_done.clear()
        self._note("caller", f"{what} ({len(audio) / 8000:.2f} s)")
        pad = (-len(audio)) % FRAME
        audio = audio + b"\xff" * pad
        pcm = mulaw.decode(audio)  # once per utterance: a slice of it is each frame's decoding
        for i in range(0, len(audio), FRAME):
            self._outgoing.append((base64.b64encode(audio[i : i + FRAME]).decode("ascii"), pcm[i : i + FRAME]))
        self._outgoing.append(None)
        await self._speech_done.wait()

    def _stream_media(self) -> None:
        """Real-time paced media, silence when the caller is quiet, like a live phone line: one frame a call.

        This 20 ms timer is the caller's only one: after the frame it also echoes the marks whose audio has played
        and ends a `wait_for_bot` whose reply is over (each was a 20 ms poll of its own: the same resolution,
        without a second wake-up per call). Latency and arrivals are stamped at the events, not on this tick.
        """
        self._next_tick += FRAME_S
        self._tick = asyncio.get_running_loop().call_at(self._next_tick, self._stream_media)
        payload = SILENCE_B64
        while self._outgoing:
            item = self._outgoing.popleft()
            if item is None:
                self._speech_done.set()
                continue
            payload, pcm = item
            if self._vad.is_speech(pcm):
                # What the server's endpointer also sees as the end of speech: latency is measured from here.
                self._last_voiced_sent = self.now()
                self._awaiting_reply = True
            break
        try:
            self._send(self._media.frame(payload, FRAME))
        except ConnectionError:
            pass  # the server hung up: the clock goes on, so a step in progress ends as it would on a dead line
        t = self.now()
        self._settle_playback(t)
        self._check_bot_wait(t)

    def _on_message(self, raw: str | bytes) -> None:
        try:
            command = self._codec.parse(raw)
        except events.ProtocolError as exc:
            self._protocol_errors.append(f"{exc.kind}: {exc}")
            self._note("server", f"sent a frame Twilio would refuse ({exc.kind}: {exc})")
            return
        self._received_commands.append(command)
        t = self.now()
        self._settle_playback(t)
        if isinstance(command, events.PlayAudio):
            self._on_media(command.payload, t)
        elif isinstance(command, events.Mark):
            self._pending_marks.append((self._play_clock, command.name))
            self._settle_playback(t)
        elif isinstance(command, events.Clear):
            self._clears += 1
            self._on_clear(t)

    def _on_closed(self, _: object) -> None:
        if not self._stopped:
            self._closed_by_server = True
            self._note("server", "closed the stream")
        if self._bot_wait is not None and not self._bot_wait.done.done():
            self._bot_wait.done.set_result(False)

    def _on_media(self, payload: bytes, t: float) -> None:
        if self._first_audio is None:
            self._first_audio = t
        frames = len(payload) // FRAME
        for _ in range(frames):
            self._frame_arrivals.append(t)
        start = max(self._play_clock, t)
        if not self._segments or self._segments[-1].end_t < t - 0.001 or self._cleared:
            self._cleared = False
            # The bot was silent: this is a new reply (audio still queued from before is not).
            self._segments.append(BotSegment(start_t=t, end_t=start, frames=0))
            if self._awaiting_reply and self._last_voiced_sent is not None:
                latency = t - self._last_voiced_sent
                self._latencies.append(latency)
                self._replied_to.append(self._last_voiced_sent)
                self._awaiting_reply = False
                self._note("bot", f"starts talking, {1000 * latency:.0f} ms after the caller's last voiced frame")
            else:
                self._note("bot", "starts talking")
        segment = self._segments[-1]
        # Fill the gap since the last audio with silence so the recording keeps real time.
        gap = int(round((start - self._play_clock) / FRAME_S)) if self._play_clock and start > self._play_clock else 0
        self._received.extend(b"\xff" * FRAME * gap)
        self._received.extend(payload)
        segment.audio.extend(payload)
        segment.frames += frames
        self._play_clock = start + len(payload) / 8000
        segment.end_t = self._play_clock

    def _on_clear(self, t: float) -> None:
        unplayed = max(0.0, self._play_clock - t)
        if unplayed:
            cut = int(unplayed * 8000)
            del self._received[len(self._received) - min(cut, len(self._received)) :]
        self._play_clock = t
        self._cleared = True  # whatever arrives next is a new reply, however soon it comes
        if self._segments:
            self._segments[-1].end_t = t
        self._note("server", f"clear ({unplayed * 1000:.0f} ms of queued audio dropped)")
        for _, name in self._pending_marks:
            self._echo_mark(name)
        self._pending_marks.clear()

    def _settle_playback(self, t: float) -> None:
        # Marks are queued in the order their audio plays (a clear drops them all): the first says if any is due.
        if not self._pending_marks or self._pending_marks[0][0] > t:
            return
        due = [m for m in self._pending_marks if m[0] <= t]
        self._pending_marks = [m for m in self._pending_marks if m[0] > t]
        for _, name in due:
            if not self._stopped and self._line is not None:
                self._echo_mark(name)

    def _echo_mark(self, name: str) -> None:
        self._marks_echoed.append(name)
        try:
            self._send(self._codec.mark(name))
        except ConnectionError:  # the server closed the stream first
            pass

    def bot_is_talking(self) -> bool:
        return self._play_clock > self.now()

    async def wait_for_bot(self, timeout_s: float = 15.0, quiet_s: float = 0.6) -> bool:
        """Waits for the bot to start and finish a reply; marks are echoed as their audio plays.

        Checked on the media tick (every 20 ms): True once a frame has arrived since the call, nothing is left to
        play and `quiet_s` have passed since the last frame arrived; False at the timeout or when the server hangs up.
        """
        if self._closed_by_server:
            return False
        wait = _BotWait(len(self._frame_arrivals), quiet_s, asyncio.get_running_loop().create_future())
        self._bot_wait = wait
        try:
            return await asyncio.wait_for(wait.done, timeout_s)
        except TimeoutError:
            return False
        finally:
            self._bot_wait = None

    def _check_bot_wait(self, t: float) -> None:
        wait = self._bot_wait
        if wait is None or wait.done.done() or len(self._frame_arrivals) <= wait.frames_before:
            return
        if self._play_clock <= t and t - self._frame_arrivals[-1] >= wait.quiet_s:
            wait.done.set_result(True)

    async def hang_up(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._send(self._codec.stop())
            self._note("caller", "hangs up (stop)")
        except ConnectionError:  # the server closed the stream first
            pass


def steps_from_args(items: list[tuple[str, str]], *, load_wav: Callable[[str], bytes]) -> list[Step]:
    steps: list[Step] = [WaitForBot()]
    for kind, value in items:
        if kind == "say":
            steps += [SayText(value), WaitForBot()]
        elif kind == "wav":
            steps += [PlayAudio(load_wav(value), label=Path(value).name), WaitForBot()]
        elif kind == "dtmf":
            steps += [PressDigits(value), WaitForBot()]
        elif kind == "pause":
            steps.append(Pause(float(value)))
    return steps


def parse_ws_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"stream URL must be ws:// or wss://, got {url!r}")
    return url
