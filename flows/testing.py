"""Scripted conversation tests for flows, replayed at text level in milliseconds.

A test file (``flows/shipped/tests/<flow>.yaml``)::

    flow: ecommerce_delivery          # a shipped flow name, or a path relative to this file
    tests:
      - name: track an order by keypad
        caller: "+15551230001"
        region: us_west               # optional; slang normalised before intent classification
        customer: {customer_id: C1, name: Ana, orders: [...]}   # crm.customer_by_phone answers this;
                                      # null: the lookup fails (unknown caller)
        backend:                      # other operations: {ok: {...}} | slow | fail | unavailable | garbage,
          crm.order_status: {ok: {order_id: "12345", status: in_transit, eta: Friday}}   # or a list, one per call
        never_reveal: "4111111111111111"   # these digits must never reach turns, slots, Say, logs or the NLU
        verification: {pin: "2580"}   # what the caller can prove: the scripted check of every verify step
                                      # answers from this (pin, account_digits, sms_code); never revealed either
        steps:
          - bot_says_contains: "delivery of"     # in what the bot said since the last caller input
          - caller_presses: "1"
          - caller_says: "me parcel hasn't come"
          - silence: true
          - bot_action: escalate                 # escalate | hangup | offer_callback
            reason_contains: "caller asked"
            intent_guess: track_order
          - slot: {order_id: "12345"}          # also: no_slot, listen ("dtmf pci"), queue,
          - resolved: true                    # clarifications, backend_failures, bot_says_not_contains
          - verified: true                    # also: verification_method, verification_locked,
                                              # verification_events: [failed, verified] (since the last input)
"""

from __future__ import annotations

import copy
import functools
import hmac
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.actions import Action, Escalate, Hangup, Listen, OfferCallback, Say, VerificationEvent
from flows.context import CallContext
from flows.engine import CallerInput, FlowEngine, Nlu
from flows.gateway import BackendBadStatus, BackendTimeout, BackendUnavailable
from flows.loader import FlowIssue, FlowValidationError, LineDict, line_of, load_flow_file, load_yaml
from flows.schema import Flow, VerifyStep
from models.intent import IntentResult

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
BEHAVIOURS = ("slow", "fail", "unavailable", "garbage")
_INPUT_KEYS = ("caller_says", "caller_presses", "silence")
_EXPECT_KEYS = (
    "bot_says_contains",
    "bot_says_not_contains",
    "bot_action",
    "reason_contains",
    "intent_guess",
    "queue",
    "listen",
    "slot",
    "no_slot",
    "resolved",
    "clarifications",
    "backend_failures",
    "verified",
    "verification_method",
    "verification_locked",
    "verification_events",
)
_ACTION_TYPES: dict[str, type] = {
    "escalate": Escalate,
    "hangup": Hangup,
    "offer_callback": OfferCallback,
    "listen": Listen,
}


# ------------------------------------------------------------------ NLU from the models


class ModelNlu:
    """The production NLU: region slang normalised, then the flow's intent classifier; yes/no by parse_yes_no."""

    def __init__(self, models: Any, region: Any | None = None, flow: Flow | None = None) -> None:
        self.models = models  # models.intent.IntentModels: one classifier per flow
        self.region = region
        self.flow = flow
        intents = flow.intent_set() if flow is not None else None
        # A flow that declares no intents understands none: every request is out of scope there.
        self.classifier = models.classifier(intents.spec()) if intents is not None and intents.intents else None
        self._bound = flow is not None

    def for_flow(self, flow: Flow) -> ModelNlu:
        """The same models and region, classifying with `flow`'s intents."""
        return ModelNlu(self.models, self.region, flow)

    def classify(self, text: str) -> IntentResult:
        if not self._bound:
            raise RuntimeError("ModelNlu is not bound to a flow: use for_flow(flow)")
        if self.classifier is None:
            return IntentResult("", 0.0, [], 1.0)
        result: IntentResult = self.classifier.classify(
            self.region.normalise(text) if self.region is not None else text
        )
        return result

    def yes_no(self, text: str) -> bool | None:
        from models.intent import parse_yes_no

        return parse_yes_no(self.region.normalise(text) if self.region is not None else text)


def build_model_nlu(region: str | None = "us_west", flow: Flow | None = None, models: Any | None = None) -> ModelNlu:
    """The region's slang table and the intent models (each flow's classifier built once per process)."""
    from models.regions import load_regions

    return ModelNlu(models or _shared_models(), load_regions()[region] if region else None, flow)


@functools.cache
def _shared_models() -> Any:
    from models.intent import IntentModels

    return IntentModels(cache_dir=Path("data") / "intent-cache")


class _RecordingNlu:
    """Remembers every text sent to the NLU so a test can prove card digits never got there."""

    def __init__(self, inner: Nlu) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def classify(self, text: str) -> IntentResult | Awaitable[IntentResult]:
        self.texts.append(text)
        return self.inner.classify(text)

    def yes_no(self, text: str) -> bool | None | Awaitable[bool | None]:
        self.texts.append(text)
        return self.inner.yes_no(text)


# ------------------------------------------------------------------ scripted backend


class ScriptedGateway:
    """A BackendGateway answering from a test's script. 'slow' raises BackendTimeout, as the real one would."""

    def __init__(self, script: dict[str, Any]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.unscripted: list[str] = []

    async def call(self, backend: str, operation: str, params: dict[str, Any], *, call_sid: str) -> dict[str, Any]:
        name = f"{backend}.{operation}"
        self.calls.append((name, {k: "[withheld]" if k == "secret" else v for k, v in params.items()}))
        if name not in self.script:
            self.unscripted.append(name)
            raise BackendBadStatus(backend, operation, "not scripted in this test")
        spec = self.script[name]
        if isinstance(spec, list):
            used = sum(1 for n, _ in self.calls if n == name) - 1
            spec = spec[min(used, len(spec) - 1)]
        if spec == "slow":
            raise BackendTimeout(backend, operation, "no answer within the time budget")
        if spec == "unavailable":
            raise BackendUnavailable(backend, operation, "circuit open")
        if spec == "fail":
            raise BackendBadStatus(backend, operation, "HTTP 500")
        if spec == "garbage":
            return {"garbage": "<html>502 Bad Gateway</html>"}
        if isinstance(spec, dict) and "verify" in spec:
            # A verify step's check: the secret matches what the test says the caller knows for that method.
            expected = spec["verify"].get(params.get("method"))
            given = str(params.get("secret", ""))
            return {"verified": expected is not None and hmac.compare_digest(given, str(expected))}
        if isinstance(spec, dict) and "ok" in spec:
            return copy.deepcopy(dict(spec["ok"]))
        raise ValueError(f"{name}: unknown scripted behaviour {spec!r}")


# ------------------------------------------------------------------ test files


@dataclass
class FlowTest:
    name: str
    file: str
    line: int
    caller: str
    region: str | None
    backend: dict[str, Any]
    steps: list[tuple[int, dict[str, Any]]]
    never_reveal: list[str] = field(default_factory=list)


@dataclass
class TestResult:
    name: str
    file: str
    line: int
    passed: bool
    failure: str = ""
    transcript: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.file}::{self.name}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_test_file(path: str | Path) -> tuple[Flow, list[FlowTest]]:
    """Parse a conversation test file and its flow. Raises FlowValidationError with file:line on problems."""
    path = Path(path)
    data = load_yaml(path)
    where = str(path)

    def fail(loc: tuple[Any, ...], message: str) -> FlowValidationError:
        line, _ = line_of(data, loc)
        return FlowValidationError([FlowIssue(where, line, ".".join(str(p) for p in loc), message)])

    if not isinstance(data, dict) or "flow" not in data or not isinstance(data.get("tests"), list):
        raise fail((), "a test file needs 'flow:' and a list under 'tests:'")
    flow_ref = str(data["flow"])
    local = path.parent / flow_ref
    flow_path = local if local.suffix in (".yaml", ".yml") and local.exists() else None
    flow_path = flow_path or path.parent.parent / f"{flow_ref}.yaml"
    if not flow_path.exists():
        flow_path = SHIPPED_DIR / f"{flow_ref}.yaml"
    if not flow_path.exists():
        raise fail(("flow",), f"flow {flow_ref!r} not found")
    flow = load_flow_file(flow_path)
    default_region = data.get("region", "us_west")
    tests: list[FlowTest] = []
    for i, raw in enumerate(data["tests"]):
        loc: tuple[Any, ...] = ("tests", i)
        if not isinstance(raw, dict) or not raw.get("name") or not isinstance(raw.get("steps"), list):
            raise fail(loc, "each test needs a 'name' and a list of 'steps'")
        unknown = set(raw) - {
            "name",
            "caller",
            "region",
            "customer",
            "backend",
            "steps",
            "never_reveal",
            "verification",
        }
        if unknown:
            raise fail(loc + (sorted(unknown)[0],), "unknown test field")
        backend = _plain(raw.get("backend") or {})
        if not isinstance(backend, dict):
            raise fail(loc + ("backend",), "backend must map 'backend.operation' to a behaviour")
        if "customer" in raw:
            backend.setdefault(
                "crm.customer_by_phone", {"ok": _plain(raw["customer"])} if raw["customer"] is not None else "fail"
            )
        for op, spec in backend.items():
            for one in spec if isinstance(spec, list) else [spec]:
                if not (one in BEHAVIOURS or (isinstance(one, dict) and set(one) == {"ok"})):
                    allowed = ", ".join(BEHAVIOURS)
                    raise fail(loc + ("backend", op), f"behaviour must be {{ok: ...}} or one of {allowed}")
        known = _plain(raw.get("verification") or {})
        if not isinstance(known, dict) or set(known) - {"pin", "account_digits", "sms_code"}:
            raise fail(loc + ("verification",), "verification maps pin, account_digits or sms_code to digits")
        known = {method: str(secret) for method, secret in known.items()}
        for vstep in flow.steps.values():
            if isinstance(vstep, VerifyStep):
                backend.setdefault(f"{vstep.backend}.{vstep.operation}", {"verify": known})
                if vstep.method == "sms_code":
                    backend.setdefault(f"{vstep.backend}.{vstep.send_operation}", {"ok": {"sent": True}})
        steps: list[tuple[int, dict[str, Any]]] = []
        for j, step in enumerate(raw["steps"]):
            sloc = loc + ("steps", j)
            if not isinstance(step, dict) or not step:
                raise fail(sloc, "a step is a mapping, e.g. {caller_says: ...}")
            bad = set(step) - set(_INPUT_KEYS) - set(_EXPECT_KEYS)
            if bad:
                raise fail(
                    sloc + (sorted(bad)[0],),
                    f"unknown step key (inputs: {', '.join(_INPUT_KEYS)}; checks: {', '.join(_EXPECT_KEYS)})",
                )
            if sum(k in step for k in _INPUT_KEYS) > 1:
                raise fail(sloc, "one caller input per step")
            if "bot_action" in step and step["bot_action"] not in _ACTION_TYPES:
                raise fail(sloc + ("bot_action",), f"bot_action must be one of {', '.join(_ACTION_TYPES)}")
            line = step.key_lines.get(next(iter(step)), 0) if isinstance(step, LineDict) else 0
            steps.append((line, _plain(step)))
        reveal = raw.get("never_reveal") or []
        tests.append(
            FlowTest(
                name=str(raw["name"]),
                file=where,
                line=getattr(raw, "line", 0),
                caller=str(raw.get("caller") or ""),
                region=raw.get("region", default_region),
                backend=backend,
                steps=steps,
                never_reveal=[str(r) for r in (reveal if isinstance(reveal, list) else [reveal])]
                + list(known.values()),
            )
        )
    return flow, tests


class _ListHandler(logging.Handler):
    """Keeps every message of a test's engine log (DEBUG included, for the never_reveal check) and passes on
    only those the application's logging asks for: `ivr flows test` at WARNING shows no DEBUG lines."""

    def __init__(self, forward_to: logging.Logger | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.forward_to = forward_to

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.forward_to is not None and record.levelno >= self.forward_to.getEffectiveLevel():
            self.forward_to.handle(record)


def _describe(action: Action) -> str:
    if isinstance(action, Say):
        return f"bot: {action.text}"
    if isinstance(action, Listen):
        return f"  (listen {action.mode}{' pci' if action.pci else ''})"
    return f"bot {type(action).__name__.lower()}: " + ", ".join(
        f"{k}={getattr(action, k)!r}" for k in action.__dataclass_fields__
    )


async def run_test(flow: Flow, test: FlowTest, nlu: Nlu, *, call_sid: str | None = None) -> TestResult:
    """Replay one conversation against the engine; the first unmet expectation fails the test."""
    gateway = ScriptedGateway(test.backend)
    bind = getattr(nlu, "for_flow", None)
    recorder = _RecordingNlu(bind(flow) if callable(bind) else nlu)
    log = logging.getLogger(f"flows.testing.{flow.name}")
    handler = _ListHandler(forward_to=log.parent)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False  # the handler passes on what the application's level lets through
    engine = FlowEngine(flow, recorder, gateway, answer_threshold=flow.answer_threshold, log=log)
    ctx = CallContext(
        call_sid=call_sid or f"TEST-{test.name[:40]}", caller=test.caller or None, region=test.region or "us_west"
    )
    transcript: list[str] = []
    everything: list[Action] = []
    last: list[Action] = []

    def result(failure: str = "") -> TestResult:
        return TestResult(test.name, test.file, test.line, not failure, failure, transcript)

    async def collect(gen: Any) -> None:
        nonlocal last
        last = []
        async for action in gen:
            last.append(action)
            everything.append(action)
            transcript.append(_describe(action))

    try:
        await collect(engine.start(ctx))
        for line, step in test.steps:
            where = f"step at line {line}" if line else "step"
            if "caller_says" in step:
                transcript.append(f"caller: {step['caller_says']}")
                await collect(engine.handle(ctx, CallerInput("speech", text=str(step["caller_says"]))))
            elif "caller_presses" in step:
                transcript.append(f"caller presses: {step['caller_presses']}")
                await collect(engine.handle(ctx, CallerInput("dtmf", digits=str(step["caller_presses"]))))
            elif step.get("silence"):
                transcript.append("caller: (silence)")
                await collect(engine.handle(ctx, CallerInput("silence")))
            failure = _check(step, last, ctx, gateway)
            if failure:
                return result(f"{where}: {failure}")
        if gateway.unscripted:
            return result(f"the flow called unscripted backend operations: {', '.join(gateway.unscripted)}")
        for secret in test.never_reveal:
            leak = _find_leak(secret, ctx, everything, handler.messages, recorder.texts)
            if leak:
                return result(f"never_reveal: digits leaked into {leak}")
        return result()
    finally:
        log.removeHandler(handler)
        log.propagate = True


def _check(step: dict[str, Any], last: list[Action], ctx: CallContext, gateway: ScriptedGateway) -> str:
    said = " ".join(a.text for a in last if isinstance(a, Say))
    for want in _as_list(step.get("bot_says_contains")):
        if str(want).lower() not in said.lower():
            return f"expected the bot to say {want!r}; it said {said!r}"
    for unwanted in _as_list(step.get("bot_says_not_contains")):
        if str(unwanted).lower() in said.lower():
            return f"the bot should not say {unwanted!r}; it said {said!r}"
    if "bot_action" in step:
        kind = _ACTION_TYPES[step["bot_action"]]
        found = next((a for a in last if isinstance(a, kind)), None)
        if found is None:
            return f"expected the bot to {step['bot_action']}; it did: {[type(a).__name__ for a in last]} ({said!r})"
        reason = getattr(found, "reason", "")
        if "reason_contains" in step and str(step["reason_contains"]).lower() not in reason.lower():
            return f"expected the {step['bot_action']} reason to contain {step['reason_contains']!r}; got {reason!r}"
        if "intent_guess" in step and getattr(found, "intent_guess", None) != step["intent_guess"]:
            return f"expected intent_guess {step['intent_guess']!r}; got {getattr(found, 'intent_guess', None)!r}"
        if "queue" in step and getattr(found, "queue", None) != step["queue"]:
            return f"expected queue {step['queue']!r}; got {getattr(found, 'queue', None)!r}"
    if "listen" in step:
        listen = next((a for a in last if isinstance(a, Listen)), None)
        want = step["listen"]
        got = f"{listen.mode}{' pci' if listen.pci else ''}" if listen else "nothing"
        if got != want:
            return f"expected the bot to listen for {want!r}; it listens for {got!r}"
    for slot, value in (step.get("slot") or {}).items():
        if ctx.slots.get(slot) != str(value):
            return f"expected slot {slot}={value!r}; slots are {ctx.slots!r}"
    for slot in _as_list(step.get("no_slot")):
        if slot in ctx.slots:
            return f"slot {slot!r} should not be set; it is {ctx.slots[slot]!r}"
    if "resolved" in step and ctx.resolved != bool(step["resolved"]):
        return f"expected resolved={bool(step['resolved'])}; it is {ctx.resolved}"
    for name in ("clarifications", "backend_failures"):
        if name in step and getattr(ctx, name) != int(step[name]):
            return f"expected {name}={step[name]}; it is {getattr(ctx, name)}"
    v = ctx.verification
    if "verified" in step and v.verified != bool(step["verified"]):
        return f"expected verified={bool(step['verified'])}; it is {v.verified} ({v.failures} failures)"
    if "verification_method" in step and v.method != step["verification_method"]:
        return f"expected verification_method={step['verification_method']!r}; it is {v.method!r}"
    if "verification_locked" in step and v.locked != bool(step["verification_locked"]):
        return f"expected verification_locked={bool(step['verification_locked'])}; it is {v.locked}"
    if "verification_events" in step:
        outcomes = [a.outcome for a in last if isinstance(a, VerificationEvent)]
        if outcomes != _as_list(step["verification_events"]):
            return f"expected verification events {step['verification_events']!r}; got {outcomes!r}"
    return ""


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _find_leak(secret: str, ctx: CallContext, actions: list[Action], logs: list[str], nlu_texts: list[str]) -> str:
    """Where the full digit string, or its last four where they must never be spoken, shows up."""
    digits = "".join(ch for ch in secret if ch.isdigit())
    last4 = digits[-4:]

    def squash(text: str) -> str:
        return "".join(ch for ch in text if ch.isdigit())

    places: list[tuple[str, str, bool]] = []  # (where, text, last4 forbidden there too)
    places += [(f"turn {t.index}", f"{t.text} {t.reply}", True) for t in ctx.turns]
    places += [(f"slot {k}", str(v), False) for k, v in ctx.slots.items()]
    places += [("ctx.flags", repr(ctx.flags), False)]
    places += [("a Say", a.text, True) for a in actions if isinstance(a, Say)]
    places += [(type(a).__name__, repr(a), True) for a in actions if not isinstance(a, (Say, Listen))]
    places += [("the log", m, True) for m in logs]
    places += [("the NLU input", t, True) for t in nlu_texts]
    for where, text, strict in places:
        if digits and digits in squash(text):
            return where
        if strict and last4 and last4 in text:
            return where
    return ""


# ------------------------------------------------------------------ running files


def conversation_tests_path(flow_path: Path) -> Path:
    return flow_path.parent / "tests" / flow_path.name


async def run_test_file(path: str | Path, nlu: Nlu | None = None) -> list[TestResult]:
    """Run every conversation in a test file; `nlu` defaults to the real models (per test region)."""
    flow, tests = load_test_file(path)
    results = []
    nlus: dict[str | None, Nlu] = {}
    for test in tests:
        if nlu is None and test.region not in nlus:
            nlus[test.region] = build_model_nlu(test.region, flow)
        results.append(await run_test(flow, test, nlu or nlus[test.region]))
    return results


__all__ = [
    "BEHAVIOURS",
    "FlowTest",
    "FlowValidationError",
    "ModelNlu",
    "ScriptedGateway",
    "TestResult",
    "build_model_nlu",
    "load_test_file",
    "run_test",
    "run_test_file",
    "conversation_tests_path",
]
