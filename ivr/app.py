"""The aiohttp application: Twilio webhook and media WebSocket, health, metrics, records API, agent desk."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.typedefs import Handler

from ivr.access_log import RedactingAccessLogger
from ivr.auth import SpentKeys, UseOnce, require_token, require_twilio_signature
from ivr.call_log import printable
from ivr.privacy import ErasureRequest
from ivr.services import Services
from ivr.session import CallSession
from ivr.storage import CallNotFound
from ivr.storage_queue import StorageUnavailable
from telephony.twilio import TwilioSerializer
from telephony.twiml import (
    STREAM_TOKEN_MAX_AGE_S,
    connect_stream_twiml,
    stream_token,
    stream_url,
)

log = logging.getLogger("ivr.app")

SERVICES = web.AppKey("services", Services)
DRAINING = web.AppKey("draining", asyncio.Event)
# Stream tokens already presented by a `start`: a second stream with the same token is refused. Kept a
# little longer than a token lives (after that the token's own issue time refuses it).
USED_STREAM_TOKENS = web.AppKey("used_stream_tokens", SpentKeys)


class WebSocketTransport:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, frame: str | bytes) -> None:
        if self.ws.closed:
            return
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def close(self, code: int, message: str) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode()[:120])


def build_app(services: Services) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024, middlewares=[_storage_unavailable])
    app[SERVICES] = services
    app[DRAINING] = asyncio.Event()
    # A fleet remembers spent stream tokens in Redis: the webhook and the media stream may reach two nodes.
    fleet = getattr(services, "fleet", None)
    spent_ttl_s = STREAM_TOKEN_MAX_AGE_S + 60.0
    app[USED_STREAM_TOKENS] = fleet.spent_keys(spent_ttl_s) if fleet is not None else UseOnce(spent_ttl_s)
    app.router.add_post("/twilio/voice", voice_webhook)
    app.router.add_get("/twilio/media", media_stream)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/calls/{call_sid}", get_call)
    app.router.add_post("/api/erasure", post_erasure)
    if services.desk is not None:
        app.router.add_routes(services.desk.routes())
    if services.callbacks is not None:
        app.router.add_routes(services.callbacks.routes())
    if services.dialler is not None:
        app.router.add_routes(services.dialler.routes())
        app.cleanup_ctx.append(services.dialler.lifecycle)
    app.on_shutdown.append(_close_live_calls)
    return app


@web.middleware
async def _storage_unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A database that is down or slow is a 503 with Retry-After, not a 500: the records are safe in the spool."""
    try:
        return await handler(request)
    except StorageUnavailable as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        raise web.HTTPServiceUnavailable(
            text="records are temporarily unavailable", headers={"Retry-After": "5"}
        ) from None


async def voice_webhook(request: web.Request) -> web.Response:
    """Twilio's voice webhook: check the signature, answer `<Connect><Stream>` with the call's parameters."""
    services = request.app[SERVICES]
    settings = services.settings
    form = await request.post()
    params = {k: str(v) for k, v in form.items()}
    require_twilio_signature(
        request,
        params,
        auth_token=settings.twilio_auth_token,
        public_url=settings.public_url,
        insecure_dev=settings.insecure_dev,
        on_bad=services.metrics.errors.labels("bad_signature").inc,
    )
    if request.app[DRAINING].is_set():
        # The load balancer already sees 503 on /healthz; a call that still arrives is answered, not dropped.
        log.info("call %s arrived while draining; answering it", printable(params.get("CallSid", "-")))
    call_sid = params.get("CallSid", "")
    stream_params: dict[str, str] = {
        key: params[key]
        for key in ("CallSid", "From", "To", "Caller", "Called", "Direction", "FromCountry", "CallerCountry")
        if key in params
    }
    if settings.twilio_auth_token and call_sid:
        stream_params["token"] = stream_token(settings.twilio_auth_token, call_sid)
    twiml = connect_stream_twiml(stream_url(settings.public_url), stream_params)
    return web.Response(text=twiml, content_type="application/xml")


async def media_stream(request: web.Request) -> web.WebSocketResponse:
    services = request.app[SERVICES]
    # No permessage-deflate, even when offered: base64 mu-law hardly compresses, and deflating 50 frames a second
    # each way cost the bench's 20 callers 11% of the server process's CPU.
    ws = web.WebSocketResponse(max_msg_size=services.settings.max_message_bytes, heartbeat=15.0, compress=False)
    await ws.prepare(request)
    settings = services.settings
    # Without an auth token (development only) any stream is accepted; `insecure_dev` never turns the check off.
    serializer = TwilioSerializer(
        stream_secret=settings.twilio_auth_token, first_use=request.app[USED_STREAM_TOKENS].first_use
    )
    session = CallSession(services, WebSocketTransport(ws), serializer)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await session.on_message(msg.data)  # binary frames are refused (and counted) by the serializer
            elif msg.type == WSMsgType.ERROR:
                exc = ws.exception()
                kind = (
                    "message_too_big" if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG else "socket_error"
                )
                session.error(kind, f"WebSocket error: {exc}")
                await session.close(kind, outcome="error")
            if session.ended.is_set():
                break
        if not session.ended.is_set():
            if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                session.error("message_too_big", f"message over {services.settings.max_message_bytes} bytes")
                await session.close("message_too_big", outcome="error")
            else:
                # Closed without `stop` (a dropped tunnel, a half-closed socket): the caller is gone.
                await session.close("socket_closed")
    except asyncio.CancelledError:
        await asyncio.shield(session.close("server_shutdown"))
        raise
    finally:
        if not session.ended.is_set():
            await session.close("socket_closed")
    return ws


async def healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if request.app[DRAINING].is_set():
        return web.json_response({"status": "draining", "active_calls": len(services.sessions)}, status=503)
    return web.json_response({"status": "ok", "active_calls": len(services.sessions)})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = services.metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_call(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    require_token(request, services.settings.api_token)
    try:
        record = await services.db.get_call(request.match_info["call_sid"])
    except CallNotFound:
        raise web.HTTPNotFound(text="no such call") from None
    return web.json_response(record)


async def post_erasure(request: web.Request) -> web.Response:
    """GDPR erasure in the running server: `{"phone": "+1...", "customer_id": "...", "actor": "dpo@..."}`
    (phone or customer id, actor required). Ends that caller's live calls, drops kept contexts, erases the
    records; answers the counts (the audit log has them too)."""
    services = request.app[SERVICES]
    require_token(request, services.settings.api_token)
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("actor"), str) or not body["actor"].strip():
        raise web.HTTPBadRequest(text="actor (who asked for the erasure) is required")
    phone, customer_id = body.get("phone"), body.get("customer_id")
    if not isinstance(phone, (str, type(None))) or not isinstance(customer_id, (str, type(None))):
        raise web.HTTPBadRequest(text="phone and customer_id must be strings")
    try:
        erasure = ErasureRequest.build(customer_id=customer_id, phone=phone)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    counts = await services.erase_personal_data(erasure, actor=body["actor"].strip()[:128])
    return web.json_response({"erased": counts})


async def drain(app: web.Application, deadline_s: float) -> int:
    """SIGTERM: refuse new work (/healthz 503), let live calls finish up to the deadline, then end them."""
    services = app[SERVICES]
    app[DRAINING].set()
    services.metrics.draining.set(1)
    log.info("draining: %d live calls, deadline %.0f s", len(services.sessions), deadline_s)
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while services.sessions and loop.time() < end:
        await asyncio.sleep(0.1)
    remaining = len(services.sessions)
    await _close_live_calls(app)
    return remaining


async def _close_live_calls(app: web.Application) -> None:
    services = app[SERVICES]
    sessions = list(services.sessions.values())
    if sessions:
        await asyncio.gather(*(s.close("server_shutdown") for s in sessions), return_exceptions=True)


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Starts serving `app`; port 0 picks a free one. Returns the runner (for cleanup) and the real port."""
    # The access log redacts credentials a client put in a URL (tokens, tickets, callback links).
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log_class=RedactingAccessLogger)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound sockets only here
    sockets = getattr(server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
