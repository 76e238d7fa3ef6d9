"""Bearer-token checks for the agent and records APIs."""

from __future__ import annotations

import hmac

from aiohttp import web


def require_token(request: web.Request, token: str | None) -> None:
    """Raises 401 unless the request carries the configured token.

    Accepted as `Authorization: Bearer <token>` or, for browsers opening a WebSocket (which cannot set
    headers), a `token` query parameter. With no token configured every request is refused: an agent
    endpoint is never open by accident.
    """
    if not token:
        raise web.HTTPUnauthorized(text="API token not configured (IVR_API_TOKEN)")
    header = request.headers.get("Authorization", "")
    supplied = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
    if not supplied or not hmac.compare_digest(supplied.encode(), token.encode()):
        raise web.HTTPUnauthorized(text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
