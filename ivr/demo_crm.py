"""A small, real CRM over HTTP for the demo and the backend tests.

Customers, orders, tickets and balances come from `ivr/data/demo_crm.json`; customers are
found by the match key of their normalised phone number, whatever format the seed or the
caller ID uses. Knobs make it slow, failing or garbage-spewing, set at start
(``--delay-ms``, ``--fail-rate``, ``--garbage``) or live with ``POST /_control``, so a demo
can show what a caller hears when the backend misbehaves.

    python -m ivr.demo_crm --host 127.0.0.1 --port 8181

Endpoints (the paths `flows/backends.py` maps its operations to):
    GET  /customers/by-phone?phone=...            crm.customer_by_phone
    GET  /orders/{order_id}                       crm.order_status
    GET  /customers/{customer_id}/balance         crm.balance
    POST /customers/{customer_id}/cards/block     crm.block_card {card_last4}
    POST /customers/{customer_id}/payment-arrangement   crm.payment_arrangement
    POST /customers/{customer_id}/top-up          crm.top_up {amount}, Idempotency-Key header
    POST /customers/{customer_id}/verify          crm.verify_caller {method, secret} -> {verified}
    POST /customers/{customer_id}/verify/code     crm.send_code: texts a 6-digit one-time code (5 minutes)
    POST /customers/{customer_id}/interactions    crm.log_interaction: an agent's wrap-up (disposition, notes,
                                                  handle time), Idempotency-Key header; GET lists them
    GET  /healthz, GET|POST /_control (knobs)
    GET  /_stats   requests received per route, and the last JOURNAL_SIZE requests as they arrived
                   (method, path with query, body), so a test can check exactly what reached the CRM;
                   a verification secret is journaled as "[withheld]"

Caller verification: the seed keeps only salted PBKDF2 hashes of each customer's PIN and the last four
digits of their account number. The demo secrets (PIN / account digits): C1001 2580 / 3391,
C1002 1357 / 5820, C1003 8642 / 7731, C1004 4096 / 6604, C1005 7315 / 2219. A one-time code is "texted"
into `DemoCrmState.outbox` (the demo's stand-in for a phone), never logged or journaled.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from flows.identity import match_key, normalise_email, normalise_phone

log = logging.getLogger("ivr.demo_crm")

DEFAULT_DATA = Path(__file__).with_name("data") / "demo_crm.json"
GARBAGE_MODES = ("html", "text", "truncated", "wrong_shape", "missing_fields")
# Routes the knobs never touch, so a test can always reach the controls of a "broken" CRM.
_UNAFFECTED = ("/_control", "/_stats", "/healthz")
JOURNAL_SIZE = 200


@dataclass
class Knobs:
    delay_ms: int = 0
    fail_rate: float = 0.0  # 0..1: share of requests answered 503
    fail_status: int = 503
    garbage: str | None = None  # one of GARBAGE_MODES, or None for well-formed answers


@dataclass
class DemoCrmState:
    customers: dict[str, dict[str, Any]]
    by_match_key: dict[str, str]
    orders: dict[str, dict[str, Any]]
    currency: str = "USD"
    knobs: Knobs = field(default_factory=Knobs)
    requests: Counter[str] = field(default_factory=Counter)
    # What callers actually sent (e.g. that only a card's last four digits reach block_card); bounded.
    journal: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=JOURNAL_SIZE))
    idempotent_replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # Texts "sent" by send_code: {"to": phone, "text": ...}; the demo's phone, read in-process only.
    outbox: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=JOURNAL_SIZE))
    # Agents' wrap-ups written back by the desk (log_interaction).
    interactions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | str = DEFAULT_DATA, *, seed: int = 0) -> DemoCrmState:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        customers: dict[str, dict[str, Any]] = {}
        by_key: dict[str, str] = {}
        orders: dict[str, dict[str, Any]] = {}
        for rec in raw["customers"]:
            cust = copy.deepcopy(rec)
            cust["phone"] = normalise_phone(cust["phone"])
            if cust.get("email"):
                cust["email"] = normalise_email(cust["email"])
            cust["blocked_cards"] = []
            cust["arrangements"] = []
            cust.setdefault("verification", {})
            cust["pending_code"] = None  # (PBKDF2 hash of a texted one-time code, expiry as time.time())
            customers[cust["customer_id"]] = cust
            by_key[match_key(cust["phone"])] = cust["customer_id"]
            for order in cust["orders"]:
                orders[order["order_id"]] = order
        return cls(customers, by_key, orders, currency=raw.get("currency", "USD"), rng=random.Random(seed))


STATE_KEY = web.AppKey("demo_crm_state", DemoCrmState)


def _order_view(order: dict[str, Any]) -> dict[str, Any]:
    eta = dt.date.today() + dt.timedelta(days=int(order["eta_days"]))
    return {"order_id": order["order_id"], "item": order["item"], "status": order["status"], "eta": eta.isoformat()}


def _customer_view(cust: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_id": cust["customer_id"],
        "name": cust["name"],
        "phone": cust["phone"],
        "email": cust.get("email"),
        "lifetime_value": cust["lifetime_value"],
        "tier": cust["tier"],
        "preferred_channel": cust["preferred_channel"],
        "orders": [_order_view(o) for o in cust["orders"]],
        "tickets": [dict(t) for t in cust["tickets"]],
    }


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:  # not can_read_body: the journal has already read (and cached) it
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text='{"error": "bad_json"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body_not_object"}', content_type="application/json")
    return body


def _customer(state: DemoCrmState, request: web.Request) -> dict[str, Any]:
    cust = state.customers.get(request.match_info["customer_id"])
    if cust is None:
        raise web.HTTPNotFound(text='{"error": "customer_not_found"}', content_type="application/json")
    return cust


async def customer_by_phone(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    phone = request.query.get("phone", "")
    try:
        key = match_key(phone)
    except ValueError as exc:
        return _error(400, "invalid_phone", str(exc))
    cid = state.by_match_key.get(key)
    if cid is None:
        return _error(404, "not_found", "no customer with that phone number")
    return web.json_response(_customer_view(state.customers[cid]))


async def order_status(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    order = state.orders.get(request.match_info["order_id"].strip().upper())
    if order is None:
        return _error(404, "not_found", "no such order")
    return web.json_response(_order_view(order))


async def balance(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    return web.json_response({"balance": round(cust["balance"], 2), "currency": state.currency})


async def block_card(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    body = await _json_body(request)
    last4 = str(body.get("card_last4", ""))
    if len(last4) != 4 or not last4.isdigit():
        return _error(400, "invalid_card_last4", "card_last4 must be four digits")
    if last4 not in cust["cards"]:
        return web.json_response({"blocked": False, "reason": "card_not_found"})
    if last4 not in cust["blocked_cards"]:
        cust["blocked_cards"].append(last4)
    return web.json_response({"blocked": True})


async def payment_arrangement(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    next_date = (dt.date.today() + dt.timedelta(days=14)).isoformat()
    cust["arrangements"].append(next_date)
    return web.json_response({"arranged": True, "next_date": next_date})


async def top_up(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return _error(400, "idempotency_key_required", "top-ups need an Idempotency-Key header")
    scoped = f"{cust['customer_id']}:{key}"
    if scoped in state.idempotent_replies:  # a replayed request must not charge twice
        return web.json_response(state.idempotent_replies[scoped])
    body = await _json_body(request)
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount <= 1000:
        return _error(400, "invalid_amount", "amount must be a number between 0 and 1000")
    cust["balance"] = round(cust["balance"] + float(amount), 2)
    reply = {"ok": True, "new_balance": cust["balance"]}
    state.idempotent_replies[scoped] = reply
    return web.json_response(reply)


async def log_interaction(request: web.Request) -> web.Response:
    """An agent's wrap-up (disposition, notes, handle time) joins the customer's record, once per key."""
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return _error(400, "idempotency_key_required", "interactions need an Idempotency-Key header")
    scoped = f"{cust['customer_id']}:{key}"
    if scoped in state.idempotent_replies:
        return web.json_response(state.idempotent_replies[scoped])
    body = await _json_body(request)
    disposition = body.get("disposition")
    if not isinstance(disposition, str) or not disposition.strip():
        return _error(400, "invalid_disposition", "disposition is required")
    interaction = {
        "interaction_id": f"INT-{len(state.interactions) + 1:05d}",
        "customer_id": cust["customer_id"],
        "call_sid": str(body.get("call_sid", "")),
        "agent": str(body.get("agent", "")),
        "disposition": disposition.strip(),
        "notes": str(body.get("notes", "")),
        "handle_s": body.get("handle_s"),
    }
    state.interactions.append(interaction)
    reply = {"interaction_id": interaction["interaction_id"]}
    state.idempotent_replies[scoped] = reply
    return web.json_response(reply, status=201)


async def interactions(request: web.Request) -> web.Response:
    """What agents wrote back (the demo's view of its own records)."""
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    return web.json_response([i for i in state.interactions if i["customer_id"] == cust["customer_id"]])


CODE_TTL_S = 300.0
_PBKDF2_ITERATIONS = 50_000


def hash_secret(secret: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """`pbkdf2_sha256$iterations$salt$hash`: how the seed stores PINs and account digits (never in clear)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str | None) -> bool:
    try:
        algo, iterations, salt, _ = (stored or "").split("$")
    except ValueError:
        return False
    if algo != "pbkdf2_sha256":
        return False
    return hmac.compare_digest(hash_secret(secret, salt=bytes.fromhex(salt), iterations=int(iterations)), stored or "")


async def verify_caller(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    body = await _json_body(request)
    method, secret = body.get("method"), body.get("secret")
    if method not in ("pin", "account_digits", "sms_code") or not isinstance(secret, str) or not secret.isdigit():
        return _error(400, "invalid_verification", "method must be pin, account_digits or sms_code; secret digits")
    if method == "sms_code":
        pending, cust["pending_code"] = cust["pending_code"], None  # one try per code
        ok = pending is not None and pending[1] > time.time() and secret_matches(secret, pending[0])
    else:
        ok = secret_matches(secret, cust["verification"].get(method))
    log.info("demo CRM: verification of %s by %s: %s", cust["customer_id"], method, "ok" if ok else "failed")
    return web.json_response({"verified": ok})


async def send_code(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cust = _customer(state, request)
    code = f"{secrets.randbelow(1_000_000):06d}"
    cust["pending_code"] = (hash_secret(code), time.time() + CODE_TTL_S)
    state.outbox.append({"to": cust["phone"], "text": f"Your Acme verification code is {code}."})
    return web.json_response({"sent": True})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(
        {"requests": dict(state.requests), "total": sum(state.requests.values()), "journal": list(state.journal)}
    )


def apply_control(knobs: Knobs, body: dict[str, Any]) -> Knobs:
    """New knobs from a /_control body; ValueError names the bad field."""
    new = Knobs(**asdict(knobs))
    unknown = set(body) - {"delay_ms", "fail", "fail_rate", "fail_status", "garbage", "reset_stats"}
    if unknown:
        raise ValueError(f"unknown control fields: {sorted(unknown)}")
    if "delay_ms" in body:
        delay = body["delay_ms"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 600_000:
            raise ValueError("delay_ms must be a number of milliseconds between 0 and 600000")
        new.delay_ms = int(delay)
    for name in ("fail", "fail_rate"):  # "fail": true/false or a rate; "fail_rate": a rate
        if name in body:
            rate = body[name]
            if isinstance(rate, bool):
                rate = 1.0 if rate else 0.0
            if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be true, false or a rate between 0 and 1")
            new.fail_rate = float(rate)
    if "fail_status" in body:
        status = body["fail_status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("fail_status must be an HTTP error status (400..599)")
        new.fail_status = status
    if "garbage" in body:
        garbage = body["garbage"]
        if garbage is True:
            garbage = "html"
        elif garbage is False:
            garbage = None
        if garbage is not None and garbage not in GARBAGE_MODES:
            raise ValueError(f"garbage must be true, false, null or one of {list(GARBAGE_MODES)}")
        new.garbage = garbage
    return new


async def control(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        try:
            body = await _json_body(request)
            state.knobs = apply_control(state.knobs, body)
        except ValueError as exc:
            return _error(400, "bad_control", str(exc))
        if body.get("reset_stats"):
            state.requests.clear()
            state.journal.clear()
        log.info("demo CRM knobs now %s", asdict(state.knobs))
    return web.json_response(asdict(state.knobs))


def _garbage_response(mode: str, real: web.StreamResponse) -> web.StreamResponse:
    if mode == "html":  # what a proxy in front of a dead backend often sends, with a 200
        return web.Response(
            text="<html><head><title>Service Unavailable</title></head><body><h1>Oops</h1></body></html>",
            content_type="text/html",
        )
    if mode == "text":
        return web.Response(text="OK", content_type="text/plain")
    if mode == "truncated":
        return web.Response(text='{"customer_id": "C10', content_type="application/json")
    if mode == "wrong_shape":
        return web.json_response(["unexpected", "list"])
    # missing_fields: the real answer with all but its first field dropped
    raw = real.body if isinstance(real, web.Response) else None
    body = json.loads(raw) if isinstance(raw, bytes | bytearray) and raw else {}
    if isinstance(body, dict) and body:
        first = next(iter(body))
        body = {first: body[first]}
    return web.json_response(body, status=real.status)


def _withhold_secret(body: str) -> str:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return "[withheld]"
    if not isinstance(parsed, dict):
        return "[withheld]"
    if "secret" in parsed:
        parsed["secret"] = "[withheld]"
    return json.dumps(parsed)


@web.middleware
async def misbehave(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    if request.path in _UNAFFECTED:
        return await handler(request)
    route = request.match_info.route.resource
    state.requests[f"{request.method} {route.canonical if route else request.path}"] += 1
    # read() caches the body, so the handler can still parse it
    body = (await request.read()).decode("utf-8", "replace") if request.body_exists else ""
    if request.path.endswith("/verify") and body:
        body = _withhold_secret(body)
    state.journal.append({"method": request.method, "path": request.path_qs, "body": body})
    knobs = state.knobs
    if knobs.delay_ms:
        await asyncio.sleep(knobs.delay_ms / 1000)
    if knobs.fail_rate and state.rng.random() < knobs.fail_rate:
        return _error(knobs.fail_status, "unavailable", "demo CRM told to fail")
    response = await handler(request)
    if knobs.garbage:
        return _garbage_response(knobs.garbage, response)
    return response


def build_app(state: DemoCrmState | None = None) -> web.Application:
    app = web.Application(middlewares=[misbehave])
    app[STATE_KEY] = state or DemoCrmState.load()
    app.router.add_get("/customers/by-phone", customer_by_phone)
    app.router.add_get("/orders/{order_id}", order_status)
    app.router.add_get("/customers/{customer_id}/balance", balance)
    app.router.add_post("/customers/{customer_id}/cards/block", block_card)
    app.router.add_post("/customers/{customer_id}/payment-arrangement", payment_arrangement)
    app.router.add_post("/customers/{customer_id}/top-up", top_up)
    app.router.add_post("/customers/{customer_id}/verify", verify_caller)
    app.router.add_post("/customers/{customer_id}/verify/code", send_code)
    app.router.add_post("/customers/{customer_id}/interactions", log_interaction)
    app.router.add_get("/customers/{customer_id}/interactions", interactions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_control", control)
    app.router.add_post("/_control", control)
    return app


async def start_demo_crm(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    delay_ms: int = 0,
    fail_rate: float = 0.0,
    garbage: str | None = None,
    data_path: Path | str = DEFAULT_DATA,
    seed: int = 0,
) -> tuple[web.AppRunner, str]:
    """Start the CRM on host:port (0 picks a free port); returns the runner and its real base URL.

    Stop it with ``await runner.cleanup()``.
    """
    state = DemoCrmState.load(data_path, seed=seed)
    state.knobs = apply_control(state.knobs, {"delay_ms": delay_ms, "fail_rate": fail_rate, "garbage": garbage})
    # handler_cancellation: a caller that gave up stops the slow handler, as a real server
    # with a request timeout would; a short shutdown so stopping never waits on a delay.
    runner = web.AppRunner(build_app(state), handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_host, real_port = runner.addresses[0][:2]
    if ":" in real_host:
        real_host = f"[{real_host}]"
    return runner, f"http://{real_host}:{real_port}"


def demo_crm_state(runner: web.AppRunner) -> DemoCrmState:
    """The live state of a CRM started by `start_demo_crm` (for in-process demos)."""
    return runner.app[STATE_KEY]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ivr.demo_crm", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8181)
    parser.add_argument("--delay-ms", type=int, default=0, help="added to every answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 503 (0..1)")
    parser.add_argument(
        "--garbage",
        nargs="?",
        const="html",
        default=None,
        choices=GARBAGE_MODES,
        help="answer with garbage instead of JSON (default mode: html)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --fail-rate")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    try:
        runner, url = await start_demo_crm(
            args.host,
            args.port,
            delay_ms=args.delay_ms,
            fail_rate=args.fail_rate,
            garbage=args.garbage,
            data_path=args.data,
            seed=args.seed,
        )
    except ValueError as exc:
        raise SystemExit(f"demo CRM: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"demo CRM listening on {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
