"""`ivr agents ...`: the administrator makes desk accounts; each agent then logs in on the desk.

ivr agents add alice --display-name "Alice Ng" --reach +14155550111     # prompts for a password
echo "$PASSWORD" | ivr agents add bob --reach sip:bob@pbx.example.com --password-stdin
ivr agents add carol --reach client:carol                                # prints a generated password
ivr agents list
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys

from ivr import agents as ag
from ivr.config import Settings
from ivr.storage import Storage, utcnow


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_agents = sub.add_parser("agents", help="agent accounts for the desk")
    agents_sub = p_agents.add_subparsers(dest="agents_command", required=True)
    p_add = agents_sub.add_parser("add", help="create an agent account (login name, reach, password)")
    p_add.add_argument("name", help="login name: lower-case letters, digits, . _ -")
    p_add.add_argument("--display-name", default="", help="the name pages and the audit show (default: the login)")
    p_add.add_argument(
        "--reach", required=True, help="where Accept dials this agent: +E.164 number, sip:user@host or client:identity"
    )
    p_add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p_add.add_argument("--generate-password", action="store_true", help="generate one and print it once")
    agents_sub.add_parser("list", help="agents with their reach and status")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.resolved_database_url())
    storage.create_all()
    try:
        if args.agents_command == "list":
            for agent in ag.list_agents(storage):
                print(json.dumps(agent))
            return 0
        try:
            reach = ag.Reach.parse(args.reach)
        except ValueError as exc:
            print(f"--reach: {exc}", file=sys.stderr)
            return 2
        generated = args.generate_password
        if generated:
            password = secrets.token_urlsafe(12)
        elif args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
            if password != getpass.getpass("again: "):
                print("the passwords differ", file=sys.stderr)
                return 2
        try:
            agent = ag.add_agent(
                storage, args.name, display_name=args.display_name, reach=reach, password=password, now=utcnow()
            )
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        storage.audit(
            actor="admin-cli", action="agent_added", subject=f"agent:{agent['name']}", details={"reach": agent["reach"]}
        )
        out: dict[str, object] = {
            "agent": agent["name"],
            "display_name": agent["display_name"],
            "reach": agent["reach"],
        }
        if generated:
            out["password"] = password  # shown once; only its hash is stored
        print(json.dumps(out))
        return 0
    finally:
        storage.dispose()
