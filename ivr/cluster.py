"""A fleet on one machine: two or three `ivr serve` nodes sharing PostgreSQL and Redis, HAProxy in front.

`make cluster` (``python -m ivr.cluster``) runs it on loopback for development and for the tests that kill
nodes; `docker-compose.yml` describes the same topology for a real deployment. HAProxy balances HTTP and
the carriers' WebSockets (least connections; a WebSocket is one long connection, so no stickiness is
needed) and takes a node out of rotation when its `/healthz` stops answering.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/ivr_cluster"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
NODE_NAMES = ("node-a", "node-b", "node-c")

HAPROXY_CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A phone call's media stream is one WebSocket that lasts the whole call.
    timeout tunnel 4h
    option forwardfor
frontend ivr
    bind {host}:{port}
    default_backend nodes
backend nodes
    balance leastconn
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""


@dataclass
class Node:
    node_id: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Nodes and a load balancer, started and stopped together."""

    workdir: Path
    database_url: str = DEFAULT_DATABASE
    redis_url: str = DEFAULT_REDIS
    base_port: int = 8081
    lb_port: int = 8080
    env: Mapping[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    balancer: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def node_env(self, node_id: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}
        env.update(
            {
                "IVR_NODE_ID": node_id,
                "IVR_DATABASE_URL": self.database_url,
                "IVR_REDIS_URL": self.redis_url,
                "IVR_PUBLIC_URL": self.url,
                "IVR_DATA_DIR": str(self.workdir / node_id),
                # One phrase-embedding and prompt cache for the fleet: a node that joins later starts without
                # re-embedding every phrase or re-rendering every fixed prompt.
                "IVR_INTENT_CACHE_DIR": str(self.workdir / "intent-cache"),
                "IVR_TTS__CACHE_DIR": str(self.workdir / "tts-cache"),
            }
        )
        env.update(self.env)
        return env

    def start_node(self, node_id: str, port: int | None = None) -> Node:
        port = port or self.base_port + len(self.nodes)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{node_id}.log"
        args = [sys.executable, "-m", "ivr.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if "IVR_TWILIO_AUTH_TOKEN" not in self.env and "IVR_TWILIO_AUTH_TOKEN" not in os.environ:
            args.append("--insecure-dev")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args,
                env=self.node_env(node_id),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_unblock_signals,  # the children must still stop on SIGTERM
            )
        node = Node(node_id, port, process, log_path)
        self.nodes[node_id] = node
        return node

    def start_balancer(self, node_ids: list[str] | None = None) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise RuntimeError("HAProxy is not installed (apt-get install haproxy)")
        servers = "\n".join(
            f"    server {n.node_id} 127.0.0.1:{n.port} check inter 500ms fall 2 rise 1"
            for n in self.nodes.values()
            if node_ids is None or n.node_id in node_ids
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(host="127.0.0.1", port=self.lb_port, servers=servers))
        with (self.workdir / "haproxy.log").open("ab") as log:
            self.balancer = subprocess.Popen(
                [haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT, preexec_fn=_unblock_signals
            )

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Until every node and the balancer answer /healthz; a node that exits fails at once."""
        deadline = time.monotonic() + timeout_s
        pending = [n.url for n in self.nodes.values()] + ([self.url] if self.balancer else [])
        while pending:
            for node in self.nodes.values():
                if node.process.poll() is not None:
                    tail = node.log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{node.node_id} exited with {node.process.returncode}:\n{tail}")
            pending = [url for url in pending if not _healthy(url)]
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout_s:.0f} s: {pending}")
            time.sleep(0.2)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[node_id]
        node.process.send_signal(sig)
        node.process.wait(timeout=30)

    def stop(self) -> None:
        procs = [n.process for n in self.nodes.values()] + ([self.balancer] if self.balancer else [])
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=35)
            except subprocess.TimeoutExpired:
                proc.kill()


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def prepare_database(url: str) -> None:
    """Creates the cluster's PostgreSQL database if it is missing and migrates it (`ivr db upgrade`)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ivr.migrate import upgrade

    target = make_url(url)
    if target.get_backend_name() == "postgresql":
        admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
        admin.dispose()
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivr.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, choices=(1, 2, 3), help="how many `ivr serve` nodes")
    parser.add_argument("--port", type=int, default=8080, help="the load balancer's port (nodes use the next ones)")
    parser.add_argument("--database-url", default=os.environ.get("IVR_DATABASE_URL", DEFAULT_DATABASE))
    parser.add_argument("--redis-url", default=os.environ.get("IVR_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--workdir", type=Path, default=Path("data/cluster"), help="logs, HAProxy config, spools")
    args = parser.parse_args(argv)

    # Blocked before any child starts, so Ctrl-C reaches `sigwait` below and the cleanup, not a traceback.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    prepare_database(args.database_url)
    passthrough = {k: v for k, v in os.environ.items() if k.startswith("IVR_") and k not in ("IVR_NODE_ID",)}
    cluster = Cluster(
        args.workdir, args.database_url, args.redis_url, base_port=args.port + 1, lb_port=args.port, env=passthrough
    )
    try:
        for node_id in NODE_NAMES[: args.nodes]:
            cluster.start_node(node_id)
        cluster.start_balancer()
        cluster.wait_ready()
        print(f"cluster ready: {cluster.url} (HAProxy) in front of", flush=True)
        for node in cluster.nodes.values():
            print(f"  {node.node_id}  {node.url}  log {node.log_path}", flush=True)
        print("Ctrl-C stops every node and the balancer.", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
