"""`ivr`: serve, place a simulated call, test flows, report, erase a customer's data, purge, verify the audit log (benchmark: `python -m bench`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ivr.access_log import PrivateDataFilter
from ivr.config import Settings

if TYPE_CHECKING:
    from ivr.services import Services

log = logging.getLogger("ivr")


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = "-"
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_CallIdFilter())
    handler.addFilter(PrivateDataFilter())  # no token, ticket, callback link or card number in any line
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(call_sid)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every plugin it loads at INFO; `ivr.migrate` says what was migrated in one line.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


SERVE_EPILOG = """\
environment variables (or the same settings in the --config YAML file: lower case, no IVR_, __ as nesting):
  IVR_TWILIO_AUTH_TOKEN   required unless --insecure-dev: checks X-Twilio-Signature on webhooks
  IVR_API_TOKEN           bearer token for /api and the agent desk (unset: those routes are refused)
  IVR_PUBLIC_URL          how Twilio reaches this server, e.g. https://ivr.example.com
                          (default http://localhost:<port>; the TwiML stream URL uses its host)
  IVR_DATABASE_URL        SQLAlchemy URL, e.g. postgresql+psycopg://... (default: SQLite under IVR_DATA_DIR)
  IVR_FLOW                the flow to run: a shipped flow name or a YAML path (default ecommerce_delivery)
  IVR_BACKENDS__CRM__BASE_URL   the CRM the flows look customers up in
  IVR_TWILIO_ACCOUNT_SID, IVR_AGENT_NUMBER, IVR_REGION, IVR_INDUSTRY, IVR_DATA_DIR: see ivr/config.py
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivr", description=__doc__)
    parser.add_argument("--config", help="YAML configuration file (IVR_* variables override it)")
    parser.add_argument("--log-level", help="default: INFO for serve, WARNING for the other commands")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser(
        "serve",
        help="run the telephony server",
        description="Run the telephony server: Twilio voice webhook, media stream, agent desk, /api and /metrics.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_serve.add_argument("--host", help="address to listen on (IVR_HOST; default 0.0.0.0)")
    p_serve.add_argument(
        "--port", type=int, help="port to listen on (IVR_PORT; default 8080); also the public URL's when unset"
    )
    p_serve.add_argument(
        "--insecure-dev",
        action="store_true",
        help="allow running without IVR_TWILIO_AUTH_TOKEN (webhook signatures unchecked): local development only",
    )

    p_call = sub.add_parser("call", help="place a simulated Twilio call against a running server")
    p_call.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (webhook) or ws:// stream URL")
    p_call.add_argument("--from", dest="from_number", default="+14155550100", help="caller ID to present")
    p_call.add_argument("--auth-token", help="sign the webhook request like Twilio (default: IVR_TWILIO_AUTH_TOKEN)")
    p_call.add_argument("--say", action=_Ordered, dest="steps", help="speak this text (Piper voice)")
    p_call.add_argument("--wav", action=_Ordered, dest="steps", help="play this recording (wav/flac)")
    p_call.add_argument("--dtmf", action=_Ordered, dest="steps", help="press these keys, e.g. 12345#")
    p_call.add_argument("--pause", action=_Ordered, dest="steps", help="stay quiet for N seconds")
    p_call.add_argument("--record", help="write what the caller heard to this WAV file")

    p_flows = sub.add_parser("flows", help="validate and test flows")
    flows_sub = p_flows.add_subparsers(dest="flows_command", required=True)
    p_validate = flows_sub.add_parser("validate", help="check flow files against the schema")
    p_validate.add_argument("paths", nargs="*", help="flow YAML files (default: the shipped flows)")
    p_ftest = flows_sub.add_parser("test", help="replay scripted conversations at text level")
    p_ftest.add_argument("paths", nargs="*", help="conversation test YAML files (default: the shipped ones)")

    p_nlu = sub.add_parser(
        "nlu",
        help="classify stdin lines with a flow's intents: one JSON per line",
        description="Read utterances one per line on stdin; print one JSON object per line with intent, "
        "confidence, decision (answer at or above the flow's threshold, else clarify) and alternatives.",
    )
    p_nlu.add_argument("--flow", required=True, help="a shipped flow's name or a flow YAML file")
    p_nlu.add_argument("--region", help="normalise regional wording first, as on a call (e.g. us_west)")

    p_report = sub.add_parser("report", help="first response, containment, escalations, cost per resolution")
    p_report.add_argument("--json", action="store_true", help="print the report as JSON")
    p_report.add_argument("--export-retraining", help="write the unclear-intent transcripts to this JSONL file")

    p_erase = sub.add_parser(
        "erase", help="GDPR erasure of one customer's or one phone number's calls, transcripts and records"
    )
    p_erase.add_argument("--customer", help="the customer id whose data is erased")
    p_erase.add_argument("--phone", help="the phone number whose calls are erased, identified or not (+1...)")
    p_erase.add_argument("--actor", default="cli", help="who asked, for the audit log")

    p_purge = sub.add_parser("purge", help="delete calls older than their region's retention (privacy settings)")
    p_purge.add_argument("--actor", default="cli", help="who ran it, for the audit log")

    p_audit = sub.add_parser("audit", help="the audit log")
    audit_sub = p_audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the audit log's hash chain; exit 1 at the first broken row")

    from ivr import agents_cli

    agents_cli.add_parser(sub)

    p_db = sub.add_parser("db", help="database schema")
    db_sub = p_db.add_subparsers(dest="db_command", required=True)
    p_init = db_sub.add_parser(
        "init", help="create the schema once as its owner; on PostgreSQL grant the server's role what it needs"
    )
    p_init.add_argument(
        "--grant-to", help="the role the server runs as: records read/write, audit log read and append only"
    )
    p_upgrade = db_sub.add_parser(
        "upgrade", help="migrate the schema to this release (an empty database, or one an earlier release made)"
    )
    p_upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: the newest)")
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the --config file and IVR_* variables, then the command's own options."""
    overrides: dict[str, Any] = {}
    if args.command == "serve":
        if args.host:
            overrides["host"] = args.host
        if args.port:
            overrides["port"] = args.port
        if args.insecure_dev:
            overrides["insecure_dev"] = True
    return Settings.load(args.config, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or ("INFO" if args.command == "serve" else "WARNING"))
    if args.command == "flows":
        from flows import cli as flows_cli

        paths = args.paths or None
        if args.flows_command == "validate":
            return flows_cli.validate_main(paths or [str(p) for p in flows_cli.shipped_flow_paths()])
        return flows_cli.test_main(paths or [])
    if args.command == "nlu":
        from flows.nlu_cli import nlu_main

        return nlu_main(args.flow, args.region)

    settings = load_settings(args)

    if args.command == "serve":
        if not settings.twilio_auth_token and not settings.insecure_dev:
            print(
                "refusing to start: IVR_TWILIO_AUTH_TOKEN is not set, so Twilio webhook signatures cannot be "
                "checked. Set it, or pass --insecure-dev for local development only.",
                file=sys.stderr,
            )
            return 2
        from ivr.event_loop import run

        return run(serve(settings), settings.event_loop)
    if args.command == "call":
        return asyncio.run(place_call(args, settings))
    if args.command == "report":
        return run_report(settings, as_json=args.json, export=args.export_retraining)
    if args.command == "erase":
        return run_erase(settings, args.customer, args.actor, phone=args.phone)
    if args.command == "purge":
        return run_purge(settings, args.actor)
    if args.command == "audit":
        return run_audit_verify(settings)
    if args.command == "db" and args.db_command == "upgrade":
        return run_db_upgrade(settings, args.revision)
    if args.command == "db":
        return run_db_init(settings, args.grant_to)
    if args.command == "agents":
        from ivr import agents_cli

        return agents_cli.run(args, settings)
    return 2


class _Ordered(argparse.Action):
    """Keeps --say/--wav/--dtmf/--pause in the order given: they are a script."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        steps = getattr(namespace, self.dest, None) or []
        steps.append((option_string.lstrip("-") if option_string else "", values))
        setattr(namespace, self.dest, steps)


async def build_server(settings: Settings, **kwargs: Any) -> tuple[web.Application, Services]:
    from ivr.app import build_app
    from ivr.services import build_all

    services = await build_all(settings, **kwargs)
    return build_app(services), services


async def serve(settings: Settings) -> int:
    from ivr.app import drain, start_site
    from ivr.nodes import LocalNodes, NodeKeeper

    app, services = await build_server(settings)
    keeper = NodeKeeper(
        services.nodes or LocalNodes(settings.node_id),
        services.db,
        settings.cluster,
        on_calls_ended=services.desk.notify if services.desk else None,
        on_error=services.metrics.errors.labels("fleet").inc,
    )
    await keeper.start()
    keeping = asyncio.create_task(keeper.run(), name="node-keeper")
    runner, _ = await start_site(app, settings.host, settings.port)
    log.info("listening on %s:%d (public URL %s)", settings.host, settings.port, settings.public_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    remaining = await drain(app, settings.drain_deadline_s)
    if remaining:
        log.warning("drain deadline passed: ended %d live calls", remaining)
    await runner.cleanup()
    keeping.cancel()
    await keeper.nodes.leave()
    await services.close()
    log.info("stopped; every call record is closed")
    return 0


async def place_call(args: argparse.Namespace, settings: Settings) -> int:
    from audio import mulaw
    from audio.files import read_audio, to_phone, write_wav
    from telephony.simcaller import SimulatedCaller, fetch_twiml, steps_from_args

    url = args.url
    params: dict[str, str] = {}
    if url.startswith("http"):
        import secrets

        call_sid = "CA" + secrets.token_hex(16)
        webhook = url.rstrip("/") + "/twilio/voice"
        form = {
            "CallSid": call_sid,
            "From": args.from_number,
            "To": "+15550001111",
            "AccountSid": settings.twilio_account_sid,
        }
        ws_url, params = await fetch_twiml(webhook, form, args.auth_token or settings.twilio_auth_token)
        print(f"webhook answered TwiML: stream {ws_url} with parameters {sorted(params)}")
    else:
        ws_url, call_sid = url, None
    synth = None
    if any(kind == "say" for kind, _ in args.steps or []):
        from models.tts import Synthesizer

        synthesizer = Synthesizer(settings.tts)
        synth = synthesizer.synthesize_phone
    caller = SimulatedCaller(
        ws_url,
        call_sid=params.get("CallSid") or call_sid,
        from_number=args.from_number,
        custom_parameters=params,
        synthesize=synth,
        log=print,
    )
    steps = steps_from_args(args.steps or [], load_wav=lambda p: to_phone(read_audio(p, 16000), 16000))
    result = await caller.run(steps)
    print()
    print("timeline")
    result.print_timeline()
    if args.record:
        write_wav(args.record, mulaw.decode(result.received), 8000)
        print(f"recorded what the caller heard to {args.record}")
    return 0


def run_report(settings: Settings, *, as_json: bool, export: str | None) -> int:
    from ivr.report import build_report, export_retraining_dataset
    from ivr.storage import Storage

    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    report = build_report(
        storage, settings.costs, unclear_intent_threshold=settings.escalation.unclear_intent_weekly_threshold
    )
    data = dataclasses.asdict(report)
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        for key, value in data.items():
            print(f"{key:28} {value}")
    if export:
        n = export_retraining_dataset(storage, Path(export))
        print(f"wrote {n} transcripts to {export}")
    return 0


def run_erase(settings: Settings, customer_id: str | None, actor: str, *, phone: str | None = None) -> int:
    """Erases the database records (a running server's in-memory contexts expire on their own, or use
    `Services.erase_personal_data` in the server process)."""
    from ivr.privacy import ErasureRequest
    from ivr.storage import Storage

    try:
        request = ErasureRequest.build(customer_id=customer_id, phone=phone)
    except ValueError as exc:
        print(f"ivr erase: {exc}", file=sys.stderr)
        return 2
    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    counts = storage.erase(request, actor=actor)
    storage.dispose()
    print(json.dumps({"customer": customer_id, "phone": request.subject if phone else None, "erased": counts}))
    return 0


def run_purge(settings: Settings, actor: str) -> int:
    from ivr.storage import Storage

    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    counts = storage.purge(settings.privacy, actor=actor)
    storage.dispose()
    print(json.dumps({"purged": counts}))
    return 0


def run_audit_verify(settings: Settings) -> int:
    from ivr.storage import Storage

    storage = Storage(settings.resolved_database_url())
    result = storage.verify_audit()
    storage.dispose()
    print(json.dumps(dataclasses.asdict(result)))
    if not result.ok:
        print(f"audit log broken at row {result.first_broken_id}: {result.reason}", file=sys.stderr)
        return 1
    return 0


def run_db_init(settings: Settings, grant_to: str | None) -> int:
    from ivr.storage import Storage

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.resolved_database_url())
    storage.init_schema(grant_to)
    storage.dispose()
    print(json.dumps({"schema": "ready", "granted_to": grant_to}))
    return 0


def run_db_upgrade(settings: Settings, revision: str) -> int:
    from ivr.migrate import upgrade
    from ivr.storage import Storage

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.resolved_database_url())
    try:
        before, after = upgrade(storage.engine, revision)
    finally:
        storage.dispose()
    print(json.dumps({"schema": "migrated" if before != after else "current", "from": before, "to": after}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
