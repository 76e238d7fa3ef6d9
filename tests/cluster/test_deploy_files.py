"""The deployment files an operator copies say what the code reads: every variable the compose file sets is a
setting the server knows, each node has its own id, HAProxy balances exactly the nodes compose starts, and
both HAProxy configurations (compose's and `make cluster`'s) are valid to HAProxy itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ivr.cli import build_parser
from ivr.cluster import HAPROXY_CONFIG
from ivr.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def known(variable: str) -> bool:
    """IVR_STORAGE__QUEUE_SIZE -> Settings.storage.queue_size."""
    model: type = Settings
    parts = variable.removeprefix("IVR_").lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)  # type: ignore[attr-defined]
        if field is None:
            return False
        if i < len(parts) - 1:
            model = field.annotation
    return True


def test_every_variable_compose_sets_is_a_setting_and_nodes_have_their_own_ids() -> None:
    services = COMPOSE["services"]
    nodes = {name: s for name, s in services.items() if s.get("environment", {}).get("IVR_NODE_ID")}
    assert sorted(nodes) == ["node-a", "node-b"]
    assert {s["environment"]["IVR_NODE_ID"] for s in nodes.values()} == {"node-a", "node-b"}
    for name, service in services.items():
        for variable in service.get("environment", {}):
            if variable.startswith("IVR_"):
                assert known(variable), f"{name} sets {variable}, which no setting reads"
    for node in nodes.values():
        env = node["environment"]
        assert env["IVR_REDIS_URL"].startswith("redis://") and env["IVR_DATABASE_URL"].startswith("postgresql")


def test_migrations_run_before_the_nodes_with_a_real_command() -> None:
    services = COMPOSE["services"]
    command = services["migrate"]["command"]
    assert command[:1] == ["ivr"]
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.db_command) == ("db", "upgrade")
    for node in ("node-a", "node-b"):
        assert services[node]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="HAProxy not installed (apt-get install haproxy)")
def test_haproxy_balances_the_compose_nodes_and_both_configs_are_valid(tmp_path: Path) -> None:
    deploy = (ROOT / "deploy" / "haproxy.cfg").read_text()
    servers = [line.split()[1] for line in deploy.splitlines() if line.strip().startswith("server ")]
    assert servers == ["node-a", "node-b"]
    assert COMPOSE["services"]["haproxy"]["volumes"] == ["./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
    local = tmp_path / "local.cfg"
    local.write_text(
        HAPROXY_CONFIG.format(host="127.0.0.1", port=8080, servers="    server node-a 127.0.0.1:8081 check")
    )
    for config in (ROOT / "deploy" / "haproxy.cfg", local):
        checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stdout + checked.stderr
