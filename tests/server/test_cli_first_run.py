"""What a newcomer meets first: `ivr serve --help`, `ivr serve --port N` on a laptop, `ivr flows test`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.cli import build_parser, load_settings
from ivr.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_VARIABLES = ("IVR_TWILIO_AUTH_TOKEN", "IVR_API_TOKEN", "IVR_PUBLIC_URL", "IVR_DATABASE_URL", "IVR_FLOW")


def _clean_env() -> dict[str, str]:
    """The environment of a fresh shell: no IVR_* settings from whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IVR_")}


def _ivr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ivr.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_clean_env(),
        timeout=120,
    )


def test_serve_help_explains_every_option_and_names_the_variables_that_matter() -> None:
    proc = _ivr("serve", "--help")
    assert proc.returncode == 0, proc.stderr
    for name in REQUIRED_VARIABLES:
        assert name in proc.stdout, f"`ivr serve --help` does not mention {name}"
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    unexplained = [a.option_strings for a in serve._actions if not a.help]
    assert not unexplained, f"options without help: {unexplained}"


async def test_serve_on_another_port_names_that_port_in_the_stream_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("IVR_")]:
        monkeypatch.delenv(name)
    settings = load_settings(build_parser().parse_args(["serve", "--port", "18080", "--insecure-dev"]))
    assert settings.public_url == "http://localhost:18080"

    from ivr.app import build_app

    services = SimpleNamespace(
        settings=settings, metrics=Metrics(), desk=None, callbacks=None, dialler=None, sessions={}
    )
    async with TestClient(TestServer(build_app(services))) as client:  # type: ignore[arg-type]
        resp = await client.post("/twilio/voice", data={"CallSid": "CA" + "1" * 32, "From": "+14155550100"})
        assert resp.status == 200
        stream = ET.fromstring(await resp.text()).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "ws://localhost:18080/twilio/media"


def test_a_public_url_still_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_PUBLIC_URL", "https://ivr.example.com")
    settings = load_settings(build_parser().parse_args(["serve", "--port", "18080", "--insecure-dev"]))
    assert settings.public_url == "https://ivr.example.com"


def test_flows_test_prints_results_not_debug_logs() -> None:
    proc = _ivr("flows", "test")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-2000:]
    assert " passed, 0 failed" in output
    assert "DEBUG" not in output, "\n".join(line for line in output.splitlines() if "DEBUG" in line)[:2000]
