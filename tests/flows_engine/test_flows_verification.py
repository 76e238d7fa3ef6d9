"""Caller verification (`verify` steps): what a caller, an agent and an auditor notice.

The banking and telecom conversations in flows/shipped/tests walk the whole flows; these cases cover the step
kind itself: load-time refusal of a flow that reads sensitive data unverified, lockout, audit events and the
secret never reaching a turn, a log line or the backend's recorded call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from flows.actions import Escalate, Listen, Say, VerificationEvent
from flows.cli import load_flow
from flows.context import CallContext
from flows.engine import CallerInput, FlowEngine
from flows.loader import FlowValidationError, load_flow_file
from flows.schema import Flow
from flows.testing import ScriptedGateway

PIN = "2580"
MARIA = {"customer_id": "C1001", "name": "Maria Garcia", "tier": "vip"}

TINY = """\
name: tiny
version: 1
industry: finance
start: check
prompts:
  ask_pin: "Type your PIN."
  bal: "Balance {balance.balance}."
  bye: "Goodbye."
  sorry: "Let me get a colleague."
steps:
  check:
    kind: verify
    method: pin
    prompt: ask_pin
    params: {customer_id: "C1001"}
    next: read
  read:
    kind: lookup
    backend: crm
    operation: balance
    params: {customer_id: "C1001"}
    save_as: balance
    requires_verification: true
    next: said
  said:
    kind: say
    prompt: bal
    next: done
  done:
    kind: end
    prompt: bye
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(text)
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(FlowValidationError) as info:
        load_flow_file(path)
    return [str(i) for i in info.value.issues]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


async def run(gen: Any) -> list[Any]:
    return [a async for a in gen]


def said(actions: list[Any]) -> str:
    return " ".join(a.text for a in actions if isinstance(a, Say))


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def make_engine(flow: Flow, script: dict[str, Any], log: logging.Logger, nlu: Any) -> tuple[FlowEngine, Any]:
    gateway = ScriptedGateway(script)
    return FlowEngine(flow, nlu, gateway, answer_threshold=flow.answer_threshold, log=log), gateway


@pytest.fixture
def log() -> Any:
    logger = logging.getLogger("test.verification")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, handler
    logger.removeHandler(handler)


# ------------------------------------------------------------------ load time


def test_a_tiny_verified_flow_loads(tmp_path: Path) -> None:
    flow = load_flow_file(write(tmp_path, TINY))
    assert flow.steps["check"].kind == "verify"


def test_sensitive_lookup_reachable_without_verification_is_refused_with_its_line(tmp_path: Path) -> None:
    text = TINY.replace("start: check", "start: read").replace("next: said", "next: said\n    on_error: check")
    path = write(tmp_path, text)
    msg = errors(path)
    line = line_of(text, "requires_verification: true")
    assert f"{path}:{line}: steps.read.requires_verification: step 'read' can be reached without verifying" in (
        "\n".join(msg)
    )


def test_the_locked_branch_does_not_count_as_verified(tmp_path: Path) -> None:
    text = TINY.replace("    next: read\n", "    next: done\n    on_locked: read\n")
    msg = errors(write(tmp_path, text))
    assert any("steps.read.requires_verification" in m for m in msg), msg


def test_unknown_method_and_zero_attempts_name_their_lines(tmp_path: Path) -> None:
    text = TINY.replace("method: pin", "method: password\n    attempts: 0")
    path = write(tmp_path, text)
    msg = "\n".join(errors(path))
    assert f"{path}:{line_of(text, 'method: password')}: steps.check.method:" in msg
    assert f"{path}:{line_of(text, 'attempts: 0')}: steps.check.attempts:" in msg


def test_a_verify_step_needs_a_question(tmp_path: Path) -> None:
    text = TINY.replace("    prompt: ask_pin\n", "")
    msg = errors(write(tmp_path, text))
    assert any("a verify step needs 'prompt' or 'text'" in m for m in msg), msg


# ------------------------------------------------------------------ the engine


async def test_correct_pin_verifies_and_only_then_the_balance_is_read(tmp_path: Path, log: Any, model_nlu: Any) -> None:
    logger, handler = log
    flow = load_flow_file(write(tmp_path, TINY))
    engine, gateway = make_engine(
        flow, {"crm.verify_caller": {"verify": {"pin": PIN}}, "crm.balance": {"ok": {"balance": 5}}}, logger, model_nlu
    )
    ctx = CallContext(call_sid="CA-verify-1", caller="+14155550100")
    first = await run(engine.start(ctx))
    listen = next(a for a in first if isinstance(a, Listen))
    assert (listen.mode, listen.pci, listen.max_digits, listen.finish_on) == ("dtmf", True, 7, "#")
    assert [name for name, _ in gateway.calls] == []  # nothing read before the PIN
    actions = await run(engine.handle(ctx, CallerInput("dtmf", digits=f"{PIN}#")))
    assert [a.outcome for a in actions if isinstance(a, VerificationEvent)] == ["verified"]
    assert "Balance 5" in said(actions)
    assert [name for name, _ in gateway.calls] == ["crm.verify_caller", "crm.balance"]
    assert (ctx.verification.verified, ctx.verification.method) == (True, "pin")
    # the PIN went to the check only, and is kept nowhere: not the turn, the log, the flags or the recorded call
    assert ctx.turns[0].text == "[keypad entry withheld: 4 digits]"
    kept = [t.text + t.reply for t in ctx.turns] + handler.lines + [repr(ctx.flags), repr(gateway.calls)]
    assert not [k for k in kept if PIN in k]
    assert gateway.calls[0][1]["secret"] == "[withheld]"


async def test_attempts_are_configurable_and_lockout_goes_to_on_locked(
    tmp_path: Path, log: Any, model_nlu: Any
) -> None:
    text = TINY.replace("    next: read\n", "    attempts: 2\n    on_locked: human\n    next: read\n") + (
        '  human:\n    kind: escalate\n    prompt: sorry\n    reason: "verification failed at the tiny line"\n'
    )
    flow = load_flow_file(write(tmp_path, text))
    engine, gateway = make_engine(flow, {"crm.verify_caller": {"verify": {"pin": PIN}}}, log[0], model_nlu)
    ctx = CallContext(call_sid="CA-verify-2")
    await run(engine.start(ctx))
    wrong = await run(engine.handle(ctx, CallerInput("dtmf", digits="1111#")))
    assert "doesn't match our records" in said(wrong)
    assert isinstance(wrong[-1], Listen)
    locked = await run(engine.handle(ctx, CallerInput("dtmf", digits="2222#")))
    assert [a.outcome for a in locked if isinstance(a, VerificationEvent)] == ["failed", "locked"]
    esc = next(a for a in locked if isinstance(a, Escalate))
    assert esc.reason == "verification failed at the tiny line"
    assert ctx.verification.locked and not ctx.verification.verified
    assert all(e.method == "pin" for e in locked if isinstance(e, VerificationEvent))
    assert "crm.balance" not in [name for name, _ in gateway.calls]


async def test_a_locked_caller_gets_no_further_attempt_later_in_the_call(model_nlu: Any, log: Any) -> None:
    flow = load_flow("banking")
    engine, gateway = make_engine(
        flow, {"crm.customer_by_phone": {"ok": MARIA}, "crm.verify_caller": {"verify": {"pin": PIN}}}, log[0], model_nlu
    )
    ctx = CallContext(call_sid="CA-verify-3", caller="+14155550100")
    await run(engine.start(ctx))
    await run(engine.handle(ctx, CallerInput("dtmf", digits="2")))
    for wrong in ("1111#", "2222#", "3333#"):
        actions = await run(engine.handle(ctx, CallerInput("dtmf", digits=wrong)))
    esc = next(a for a in actions if isinstance(a, Escalate))
    assert (esc.reason, esc.trigger) == ("verification failed", "verification_failed")
    checks = [name for name, _ in gateway.calls if name == "crm.verify_caller"]
    # the same call restarted on the flow (back from an agent) goes straight to a person again
    again = await run(engine.start(ctx))
    await run(engine.handle(ctx, CallerInput("dtmf", digits="2")))
    assert [name for name, _ in gateway.calls if name == "crm.verify_caller"] == checks
    assert "crm.balance" not in [name for name, _ in gateway.calls]
    assert again  # greeted again


async def test_sms_code_is_sent_by_the_backend_then_checked(tmp_path: Path, log: Any, model_nlu: Any) -> None:
    text = TINY.replace("method: pin", "method: sms_code").replace("Type your PIN.", "Type the code.")
    flow = load_flow_file(write(tmp_path, text))
    script = {
        "crm.send_code": {"ok": {"sent": True}},
        "crm.verify_caller": {"verify": {"sms_code": "493817"}},
        "crm.balance": {"ok": {"balance": 5}},
    }
    engine, gateway = make_engine(flow, script, log[0], model_nlu)
    ctx = CallContext(call_sid="CA-verify-4")
    first = await run(engine.start(ctx))
    assert "sent a code by text message" in said(first)
    assert [name for name, _ in gateway.calls] == ["crm.send_code"]
    actions = await run(engine.handle(ctx, CallerInput("dtmf", digits="493817#")))
    assert "Balance 5" in said(actions)
    assert ctx.verification.method == "sms_code"


async def test_an_unverified_sensitive_lookup_never_runs_even_if_the_loader_is_bypassed(
    log: Any, model_nlu: Any
) -> None:
    import yaml

    raw = yaml.safe_load(TINY)
    raw["start"] = "read"
    flow = Flow.model_validate(raw)  # no check_flow: a hand-built flow
    engine, gateway = make_engine(flow, {"crm.balance": {"ok": {"balance": 5}}}, log[0], model_nlu)
    ctx = CallContext(call_sid="CA-verify-5")
    actions = await run(engine.start(ctx))
    assert gateway.calls == []
    esc = next(a for a in actions if isinstance(a, Escalate))
    assert "needs a verified caller" in esc.reason
