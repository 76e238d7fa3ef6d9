"""A WebSocket client whose `send_text` is a plain call: the simulated caller's line to the server.

The simulated callers share a machine with the server they measure, and a caller sends a frame every 20 ms. With
`websockets.connect` each frame cost a task wake-up, a lock and a chain of coroutines, more CPU than building and
writing the frame. This is the same library's sans-I/O protocol (the same handshake, extensions, framing and
checks as `websockets.connect`) under a plain asyncio Protocol: a frame is written to the socket in the call that
sends it, so a timer callback can send it, and each message received is handed to a callback as it is parsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT, Response
from websockets.protocol import State
from websockets.uri import parse_uri

CLOSE_TIMEOUT_S = 10.0  # as websockets.connect: how long to wait for the server's side of the closing handshake


class WebSocketLine(asyncio.Protocol):
    """One client connection. `on_message(str | bytes)` gets each text (str) or binary (bytes) message."""

    def __init__(self, uri: str, on_message: Callable[[str | bytes], None], *, max_size: int) -> None:
        # The permessage-deflate offer that websockets.connect makes: the handshake on the wire is unchanged.
        self._protocol = ClientProtocol(
            parse_uri(uri), extensions=enable_client_permessage_deflate(None), max_size=max_size
        )
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._fragments: list[bytes] = []
        self._text = False
        self._abort_later: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()  # done when the TCP connection is gone

    @classmethod
    async def connect(
        cls, uri: str, on_message: Callable[[str | bytes], None], *, timeout_s: float, max_size: int
    ) -> WebSocketLine:
        """Opens the connection and completes the opening handshake (websockets' `InvalidHandshake` if refused)."""
        wsuri = parse_uri(uri)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, line = await loop.create_connection(
                lambda: cls(uri, on_message, max_size=max_size), wsuri.host, wsuri.port, ssl=wsuri.secure or None
            )
            try:
                await asyncio.shield(line._opened)
            except BaseException:
                line.abort()
                raise
        return line

    def send_text(self, text: str) -> None:
        """Writes one text message now; `ConnectionError` once the connection is closing."""
        if self._protocol.state is not State.OPEN or self._transport is None or self._transport.is_closing():
            raise ConnectionError("the WebSocket is closed")
        self._protocol.send_text(text.encode())
        self._flush()

    async def close(self) -> None:
        """The closing handshake, then the TCP connection closed (aborted after `CLOSE_TIMEOUT_S`)."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one without subclassing it
        request = self._protocol.connect()
        request.headers.setdefault("User-Agent", USER_AGENT)
        self._protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self._protocol.receive_eof()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.receive_eof()  # idempotent: the protocol's state becomes CLOSED
        if self._abort_later is not None:
            self._abort_later.cancel()
        if not self._opened.done():
            self._opened.set_exception(self._protocol.handshake_exc or ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- internals -------------------------------------------------------------------------------------------
    def _process(self) -> None:
        events = self._protocol.events_received()
        self._flush()  # automatic replies: pong, the close frame answering the server's
        for event in events:
            if isinstance(event, Response):
                if not self._opened.done():
                    if self._protocol.handshake_exc is not None:
                        self._opened.set_exception(self._protocol.handshake_exc)
                    else:
                        self._opened.set_result(None)
            elif isinstance(event, Frame):
                self._on_frame(event)
        if self._protocol.close_expected() and self._abort_later is None:
            self._abort_later = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._text = frame.opcode is Opcode.TEXT
            self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
        else:
            return  # ping, pong, close: the protocol has answered them
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        if not self._text:
            self._on_message(data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self._protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            self._flush()
            return
        self._on_message(text)

    def _flush(self) -> None:
        if self._transport is None:
            return
        for data in self._protocol.data_to_send():
            if data:
                self._transport.write(data)
            elif self._transport.can_write_eof():
                self._transport.write_eof()  # the protocol is done sending: half-close, as websockets does
            else:
                self._transport.close()
