"""The flow format: pydantic models for a flow file, its tiny condition language and its templates.

A flow is a graph of steps. Conditions (`when:`) and templates (`{customer.name}`) are parsed here, at load
time, so a typo is a validation error with a line number, not a surprise in the middle of a call. Conditions are
a small safe language (paths, literals, comparisons, and/or/not, `in`): nothing is ever `eval`ed.

File layout: `name`, `version`, `industry`, `start` (first step id), `queue` (agent queue), `prompts` (id ->
text; fixed ones are pre-rendered by the TTS), optional `intent_labels`, `no_input`, `max_no_match`, and `steps`
(id -> step). Step kinds: say, menu, intent, collect, confirm, lookup, verify, branch, escalate, end (see the
models below). Names usable in `when:` and `{templates}`: `customer.*` (plus `customer.known`,
`customer.has_order_in_transit`, `customer.first_name`), `order.*` (the order in transit, else the first),
`lookup.*` (last lookup result), each lookup's `save_as` name, each collected slot, `caller`,
`verification.verified` and `verification.method`. A lookup with `requires_verification: true` must be
reachable only through a verify step's `next` (checked at load time, and again by the engine at run time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.intent_library import FlowIntents, IntentDef, IntentLibraryError
from models.intent import Industry, answer_threshold

# Prompts the engine itself speaks. A flow overrides any of them under `prompts:` with the same id.
DEFAULT_PROMPTS: dict[str, str] = {
    "_no_input": "Sorry, I didn't hear anything.",
    "_no_input_goodbye": "I still can't hear you, so I'll end the call now. Please call back any time. Goodbye.",
    "_no_match": "Sorry, I didn't get that.",
    "_invalid_value": "Sorry, that doesn't look right.",
    "_confirm_value": "I heard {value}, is that right? Say yes or press 1, or say no or press 2.",
    "_confirm_count": "I got {count} digits. If that's right, press 1. To enter them again, press 2.",
    "_keypad_only": "For your security, please use your keypad for this.",
    "_clarify": "Sorry, just to be sure: is it about {first}, or {second}?",
    "_clarify_one": "Sorry, just to be sure: is it about {first}?",
    "_agent": "Let me connect you with a colleague who can help.",
    "_backend_holding": "I'm sorry, our system is taking longer than usual to answer.",
    "_backend_error": "I'm sorry, I can't reach that system right now.",
    "_callback_question": (
        "Would you like us to call you back as soon as we have the answer? Say yes or press 1, or say no or press 2."
    ),
    "_callback_confirmed": "Thank you. We'll call you back on this number shortly. Goodbye.",
    "_goodbye": "Thanks for calling. Goodbye.",
    "_not_handled": "I can't help with that on this line.",
    "_verify_wrong": "Sorry, that doesn't match our records.",
    "_verify_locked": (
        "I'm sorry, I couldn't verify you, so I can't go any further on this line. Let me pass you to a colleague."
    ),
    "_verify_unavailable": "I'm sorry, I can't check that right now. Let me pass you to a colleague.",
    "_verify_code_sent": "I've sent a code by text message to the number we have on file.",
}

RESERVED_ROOTS = frozenset({"customer", "order", "lookup", "slots", "caller", "flow", "verification"})

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class ExpressionError(ValueError):
    pass


# ---------------------------------------------------------------- conditions

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>==|!=|<=|>=|<|>|\(|\))"
    rf"|(?P<name>{_NAME}(?:\.{_NAME})*))"
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "none"}


def _tokenize(src: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    src = src.rstrip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"unexpected text {src[pos:].strip()[:20]!r} in condition {src!r}")
        pos = m.end()
        if m.group("num") is not None:
            num = m.group("num")
            out.append(("lit", float(num) if "." in num else int(num)))
        elif m.group("str") is not None:
            out.append(("lit", m.group("str")[1:-1]))
        elif m.group("op") is not None:
            out.append(("op", m.group("op")))
        else:
            name = m.group("name")
            low = name.lower()
            if low in ("true", "false"):
                out.append(("lit", low == "true"))
            elif low in ("null", "none"):
                out.append(("lit", None))
            elif low in _KEYWORDS:
                out.append(("kw", low))
            else:
                out.append(("path", name))
    return out


class Condition:
    """A parsed `when:` expression, e.g. ``customer.has_order_in_transit and lookup.status == "in_transit"``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._toks = _tokenize(source)
        self._i = 0
        if not self._toks:
            raise ExpressionError("empty condition")
        self.tree = self._or()
        if self._i != len(self._toks):
            raise ExpressionError(f"unexpected {self._toks[self._i][1]!r} in condition {source!r}")
        del self._toks

    def _peek(self) -> tuple[str, Any] | None:
        return self._toks[self._i] if self._i < len(self._toks) else None

    def _take(self) -> tuple[str, Any]:
        tok = self._peek()
        if tok is None:
            raise ExpressionError(f"condition {self.source!r} ends too early")
        self._i += 1
        return tok

    def _or(self) -> tuple[Any, ...]:
        node = self._and()
        while self._peek() == ("kw", "or"):
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> tuple[Any, ...]:
        node = self._not()
        while self._peek() == ("kw", "and"):
            self._take()
            node = ("and", node, self._not())
        return node

    def _not(self) -> tuple[Any, ...]:
        if self._peek() == ("kw", "not"):
            self._take()
            return ("not", self._not())
        return self._cmp()

    def _cmp(self) -> tuple[Any, ...]:
        left = self._atom()
        tok = self._peek()
        if tok and ((tok[0] == "op" and tok[1] not in "()") or tok == ("kw", "in")):
            self._take()
            return ("cmp", tok[1], left, self._atom())
        if tok == ("kw", "not") and self._i + 1 < len(self._toks) and self._toks[self._i + 1] == ("kw", "in"):
            self._take(), self._take()
            return ("not", ("cmp", "in", left, self._atom()))
        return left

    def _atom(self) -> tuple[Any, ...]:
        kind, val = self._take()
        if (kind, val) == ("op", "("):
            node = self._or()
            if self._take() != ("op", ")"):
                raise ExpressionError(f"missing ')' in condition {self.source!r}")
            return node
        if kind == "lit":
            return ("lit", val)
        if kind == "path":
            return ("path", val)
        raise ExpressionError(f"unexpected {val!r} in condition {self.source!r}")

    def paths(self) -> list[str]:
        out: list[str] = []

        def walk(node: tuple[Any, ...]) -> None:
            if node[0] == "path":
                out.append(node[1])
            else:
                for child in node[1:]:
                    if isinstance(child, tuple):
                        walk(child)

        walk(self.tree)
        return out

    def evaluate(self, namespace: dict[str, Any]) -> bool:
        return bool(self._eval(self.tree, namespace))

    def _eval(self, node: tuple[Any, ...], ns: dict[str, Any]) -> Any:
        op = node[0]
        if op == "lit":
            return node[1]
        if op == "path":
            return resolve_path(ns, node[1])
        if op == "not":
            return not self._eval(node[1], ns)
        if op == "and":
            return self._eval(node[1], ns) and self._eval(node[2], ns)
        if op == "or":
            return self._eval(node[1], ns) or self._eval(node[2], ns)
        _, cmp, left_node, right_node = node
        left, right = self._eval(left_node, ns), self._eval(right_node, ns)
        try:
            if cmp == "==":
                return _loose(left) == _loose(right)
            if cmp == "!=":
                return _loose(left) != _loose(right)
            if cmp == "in":
                return right is not None and left in right
            left, right = _number(left), _number(right)
            if left is None or right is None:
                return False
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[cmp]
        except TypeError:
            return False


def _loose(value: Any) -> Any:
    # Slots are strings ("20"); lookups are JSON numbers (20): compare them as equals.
    num = _number(value)
    return num if num is not None and not isinstance(value, bool) else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def resolve_path(ns: dict[str, Any], path: str) -> Any:
    """`a.b.c` through dicts, dataclasses and lists (numeric parts index lists). Missing parts give None."""
    cur: Any = ns
    for part in path.split("."):
        if cur is None:
            return None
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit():
            idx = int(part)
            cur = cur[idx] if idx < len(cur) else None
        elif is_dataclass(cur) and part in {f.name for f in fields(cur)}:
            cur = getattr(cur, part)
        else:
            return None
    return cur


# ---------------------------------------------------------------- templates

_PLACEHOLDER = re.compile(rf"\{{({_NAME}(?:\.{_NAME})*)(?:\|({_NAME}))?\}}")
TEMPLATE_FILTERS = ("digits", "count")


@dataclass(frozen=True)
class Template:
    """`Your order of {order.item} arrives {lookup.eta}`. Filters: `|digits` spaces digits out for reading."""

    source: str

    @staticmethod
    def check(source: str) -> list[str]:
        """Placeholder paths used by `source`; raises ExpressionError for stray braces or unknown filters."""
        paths = []
        for m in _PLACEHOLDER.finditer(source):
            if m.group(2) and m.group(2) not in TEMPLATE_FILTERS:
                raise ExpressionError(f"unknown template filter '|{m.group(2)}' (known: {', '.join(TEMPLATE_FILTERS)})")
            paths.append(m.group(1))
        rest = _PLACEHOLDER.sub("", source)
        if "{" in rest or "}" in rest:
            raise ExpressionError(f"unbalanced or malformed placeholder in {source!r}; use {{name}} or {{a.b}}")
        return paths

    @property
    def is_fixed(self) -> bool:
        return not _PLACEHOLDER.search(self.source)

    @property
    def fixed_start(self) -> str:
        """The words before the first placeholder ("Thanks, I have noted that you said ")."""
        m = _PLACEHOLDER.search(self.source)
        return self.source if m is None else self.source[: m.start()]

    def render(self, ns: dict[str, Any], missing: list[str] | None = None) -> str:
        def sub(m: re.Match[str]) -> str:
            value = resolve_path(ns, m.group(1))
            if value is None:
                if missing is not None:
                    missing.append(m.group(1))
                return ""
            text = str(value)
            if m.group(2) == "digits":
                return " ".join(ch for ch in text if not ch.isspace())
            if m.group(2) == "count":
                return str(len(text))
            return text

        return re.sub(r"\s{2,}", " ", _PLACEHOLDER.sub(sub, self.source)).strip()


# ---------------------------------------------------------------- steps


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StepBase(_Model):
    description: str = ""
    asr_vocabulary: list[str] = Field(
        default_factory=list, description="words the recogniser should expect at this step, after the flow's"
    )
    resolves: bool = Field(
        False, description="reaching this step resolves the caller's issue unless their next input objects"
    )


class _Spoken(_StepBase):
    """A step with something to say: `prompt` (an id under `prompts:`) or inline `text` (may hold placeholders)."""

    prompt: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _Spoken:
        if self.prompt and self.text:
            raise ValueError("give either 'prompt' (a prompt id) or 'text', not both")
        return self


class SayStep(_Spoken):
    kind: Literal["say"]
    next: str


class MenuOption(_Model):
    key: str | None = Field(None, description="keypad key for this choice, e.g. '1'")
    phrases: list[str] = Field(default_factory=list, description="words that pick this choice by voice")
    intents: list[str] = Field(default_factory=list, description="classified intents that pick this choice")
    prompt: str | None = None
    text: str | None = None
    when: str | None = Field(None, description="offer this choice only when the condition holds")
    next: str

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9*#]", v):
            raise ValueError(f"menu key must be one keypad key (0-9, * or #), got {v!r}")
        return v

    @field_validator("intents", mode="before")
    @classmethod
    def _one_intent(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class MenuStep(_Spoken):
    kind: Literal["menu"]
    options: list[MenuOption] = Field(min_length=1)
    otherwise: str | None = Field(None, description="step that gets free speech matching no option (an intent step)")
    timeout_s: float = 8.0


class IntentStep(_Spoken):
    kind: Literal["intent"]
    routes: dict[str, str] = Field(description="intent name -> step")
    otherwise: str | None = Field(None, description="step for a confident intent this step does not route")
    timeout_s: float = 8.0


class CollectStep(_Spoken):
    kind: Literal["collect"]
    slot: str = Field(pattern=rf"^{_NAME}$")
    mode: Literal["voice", "dtmf", "both"] = "both"
    value: Literal["digits", "alnum", "number", "text"] = Field(
        "digits", description="digits; alnum: letters and digits like A1001 (keypad gives digits); number: amount"
    )
    pattern: str | None = Field(None, description="regex the whole (normalised) value must match")
    expects: Literal["digits", "order_number", "email", "date"] | None = Field(
        None,
        description="how the caller says it (sets endpointing); default: digits for digits, order_number for alnum",
    )
    max_digits: int | None = Field(None, ge=1)
    finish_on: str = "#"
    confirm: bool = True
    confirm_prompt: str | None = None
    invalid_prompt: str | None = None
    pci: bool = Field(False, description="card data: keypad only, masked everywhere, never sent to the NLU")
    keep_last4: bool = Field(False, description="pci only: store the last 4 digits in slot '<slot>_last4'")
    timeout_s: float = 10.0
    next: str

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _pci_rules(self) -> CollectStep:
        if self.pci and self.mode != "dtmf":
            raise ValueError("a pci collect step is keypad only: set 'mode: dtmf'")
        if self.pci and self.value != "digits":
            raise ValueError("a pci collect step collects digits: set 'value: digits'")
        if self.keep_last4 and not self.pci:
            raise ValueError("'keep_last4' only applies to pci collect steps")
        return self


class ConfirmStep(_Spoken):
    """A yes/no question. `resolves_on_yes`: a yes is the caller confirming their issue is solved."""

    kind: Literal["confirm"]
    on_yes: str
    on_no: str
    resolves_on_yes: bool = False
    timeout_s: float = 8.0


class LookupStep(_StepBase):
    kind: Literal["lookup"]
    backend: str = Field(pattern=rf"^{_NAME}$")
    operation: str = Field(pattern=rf"^{_NAME}$")
    params: dict[str, str] = Field(default_factory=dict, description="templates: '{caller}', '{order_id}'")
    save_as: str | None = Field(None, pattern=rf"^{_NAME}$", description="name for the result in conditions")
    sets_customer: bool = Field(False, description="the result is a customer record: it becomes ctx.customer")
    expects: list[str] = Field(default_factory=list, description="keys a usable result must have")
    hold_prompt: str | None = Field(None, description="said before the call, e.g. 'One moment while I look'")
    hold_text: str | None = None
    next: str
    on_timeout: str | None = Field(None, description="default: holding line and a callback offer")
    on_error: str | None = Field(None, description="default: apology and a callback offer")
    on_not_found: str | None = Field(
        None, description='the backend answered {"found": false}: a normal answer, not a failure (unknown caller)'
    )
    requires_verification: bool = Field(
        False, description="balances, card blocks, payments: only after a verify step has verified the caller"
    )


VerifyMethod = Literal["pin", "account_digits", "sms_code"]
# How many keys each method takes: a 4-6 digit PIN, the last 4 digits of the account, a 6-digit texted code.
VERIFY_DIGITS: dict[str, tuple[int, int]] = {"pin": (4, 6), "account_digits": (4, 4), "sms_code": (6, 6)}


class VerifyStep(_Spoken):
    """Verify the caller on the keypad before anything sensitive: a PIN, account knowledge (the last digits of
    the account number) or a one-time code texted by the backend. The secret goes only to the backend's check
    (`operation`, params plus `method` and `secret`), never to a turn, slot, log, the NLU or an agent.

    Already verified in this call: straight on to `next`. `attempts` wrong entries lock verification for the
    rest of the call and go to `on_locked` (default: a person, reason "verification failed")."""

    kind: Literal["verify"]
    method: VerifyMethod
    backend: str = Field("crm", pattern=rf"^{_NAME}$")
    operation: str = Field("verify_caller", pattern=rf"^{_NAME}$", description="answers {verified: true|false}")
    send_operation: str = Field("send_code", pattern=rf"^{_NAME}$", description="sms_code only: texts the code")
    params: dict[str, str] = Field(default_factory=dict, description="templates, e.g. '{customer.customer_id}'")
    attempts: int = Field(3, ge=1, le=10, description="wrong entries allowed before lockout")
    retry_prompt: str | None = Field(None, description="said after a wrong entry (default: _verify_wrong)")
    finish_on: str = "#"
    timeout_s: float = 10.0
    next: str
    on_locked: str | None = Field(None, description="default: escalate, reason 'verification failed'")
    on_error: str | None = Field(None, description="the check failed or timed out; default: a person")


class BranchCase(_Model):
    when: str
    next: str


class BranchStep(_StepBase):
    kind: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1)
    otherwise: str


class EscalateStep(_Spoken):
    kind: Literal["escalate"]
    reason: str
    queue: str | None = None
    trigger: str = Field(
        "flow", pattern=rf"^{_NAME}$", description="metrics label: 'caller_request' when the caller chose a person"
    )


class EndStep(_Spoken):
    kind: Literal["end"]
    reason: str = "completed"


Step = Annotated[
    SayStep
    | MenuStep
    | IntentStep
    | CollectStep
    | ConfirmStep
    | LookupStep
    | VerifyStep
    | BranchStep
    | EscalateStep
    | EndStep,
    Field(discriminator="kind"),
]
STEP_KINDS = ("say", "menu", "intent", "collect", "confirm", "lookup", "verify", "branch", "escalate", "end")


class NoInputPolicy(_Model):
    reprompts: int = Field(1, ge=0, description="silences answered with a reprompt before giving up")
    then: Literal["hangup", "escalate"] = "hangup"


class Flow(_Model):
    name: str = Field(pattern=rf"^{_NAME}$")
    version: int | str
    industry: Industry
    description: str = ""
    start: str
    queue: str = Field("general", description="agent queue for escalations from this flow")
    prompts: dict[str, str] = Field(default_factory=dict)
    intent_labels: dict[str, str] = Field(default_factory=dict)
    intent_libraries: list[str] = Field(default_factory=list, description="flows/intents/<name>.yaml to import")
    intents: dict[str, IntentDef] = Field(default_factory=dict, description="this flow's own intents")
    asr_vocabulary: list[str] = Field(
        default_factory=list, description="product names and terms callers use (Whisper prompt at every step)"
    )
    no_input: NoInputPolicy = NoInputPolicy()
    max_no_match: int = Field(2, ge=0, description="misunderstood answers reprompted before escalating")
    steps: dict[str, Step] = Field(min_length=1)

    @property
    def answer_threshold(self) -> float:
        """Intent confidence this flow's industry needs to act without clarifying."""
        return answer_threshold(self.industry)

    def prompt_text(self, prompt_id: str) -> str:
        return self.prompts.get(prompt_id) or DEFAULT_PROMPTS[prompt_id]

    def all_prompts(self) -> dict[str, str]:
        """Every prompt this flow can speak, engine defaults included; fixed ones can be pre-rendered."""
        return {**DEFAULT_PROMPTS, **self.prompts}

    def fixed_prompts(self) -> dict[str, str]:
        return {pid: text for pid, text in self.all_prompts().items() if Template(text).is_fixed}

    def reply_starts(self) -> list[str]:
        """The fixed words every templated reply begins with (prompts and steps' `text:`), for the prompt cache."""
        texts = list(self.all_prompts().values()) + [getattr(s, "text", None) for s in self.steps.values()]
        starts = {Template(t).fixed_start for t in texts if isinstance(t, str) and not Template(t).is_fixed}
        return sorted(start for start in starts if start.strip())

    def intent_set(self) -> FlowIntents:
        """The intents this flow understands: its imported libraries plus its own `intents:` block."""
        return FlowIntents(self.intent_libraries, self.intents)

    def intent_label(self, intent: str) -> str:
        if intent in self.intent_labels:
            return self.intent_labels[intent]
        try:
            return self.intent_set().label(intent)
        except IntentLibraryError:
            return intent.replace("_", " ")


# ---------------------------------------------------------------- cross-checks

Loc = tuple[str | int, ...]


def successors(step: Any) -> list[tuple[Loc, str]]:
    """(location inside the step, target step id) for every edge leaving `step`."""
    out: list[tuple[Loc, str]] = []
    for name in ("next", "otherwise", "on_timeout", "on_error", "on_not_found", "on_yes", "on_no", "on_locked"):
        target = getattr(step, name, None)
        if target:
            out.append(((name,), target))
    if isinstance(step, MenuStep):
        out += [(("options", i, "next"), o.next) for i, o in enumerate(step.options)]
    if isinstance(step, IntentStep):
        out += [(("routes", intent), target) for intent, target in step.routes.items()]
    if isinstance(step, BranchStep):
        out += [(("cases", i, "next"), c.next) for i, c in enumerate(step.cases)]
    return out


def check_flow(flow: Flow) -> list[tuple[Loc, str]]:
    """Graph and reference checks pydantic cannot do: (location, message) for each problem."""
    issues: list[tuple[Loc, str]] = []
    steps = flow.steps
    prompts = flow.all_prompts()
    slots = {s.slot for s in steps.values() if isinstance(s, CollectStep)}
    pci_slots = {s.slot for s in steps.values() if isinstance(s, CollectStep) and s.pci}
    last4 = {f"{s.slot}_last4" for s in steps.values() if isinstance(s, CollectStep) and s.keep_last4}
    saved = {s.save_as for s in steps.values() if isinstance(s, LookupStep) and s.save_as}
    roots = RESERVED_ROOTS | slots | last4 | saved | {"value", "count", "first", "second"}

    if flow.start not in steps:
        issues.append((("start",), f"unknown step '{flow.start}'"))
    known_intents: set[str] = set()
    try:
        intent_set = flow.intent_set()
        known_intents = set(intent_set.names)
        if intent_set.intents:
            intent_set.spec()
    except IntentLibraryError as exc:
        issues.append((("intents",) if flow.intents else ("intent_libraries",), str(exc)))
    for name in saved & (RESERVED_ROOTS | slots):
        issues.append((("steps",), f"lookup save_as '{name}' clashes with a slot or a built-in name"))

    def check_paths(loc: Loc, paths: list[str], what: str) -> None:
        for path in paths:
            root = path.split(".")[0]
            if root not in roots:
                issues.append((loc, f"unknown name '{root}' in {what} (known: {', '.join(sorted(roots))})"))
            if root in pci_slots or (root == "slots" and path.split(".")[1:2] and path.split(".")[1] in pci_slots):
                issues.append((loc, f"'{path}' is card data (pci) and can never be spoken or sent"))

    def check_text(loc: Loc, text: str | None) -> None:
        if text is None:
            return
        try:
            check_paths(loc, Template.check(text), "template")
        except ExpressionError as exc:
            issues.append((loc, str(exc)))

    def check_prompt(loc: Loc, prompt_id: str | None) -> None:
        if prompt_id is not None and prompt_id not in prompts:
            issues.append((loc, f"missing prompt '{prompt_id}' (not defined under prompts:)"))

    def check_cond(loc: Loc, source: str | None) -> None:
        if source is None:
            return
        try:
            check_paths(loc, Condition(source).paths(), "condition")
        except ExpressionError as exc:
            issues.append((loc, str(exc)))

    for pid, text in flow.prompts.items():
        check_text(("prompts", pid), text)

    for sid, step in steps.items():
        base: Loc = ("steps", sid)
        for loc, target in successors(step):
            if target not in steps:
                issues.append((base + loc, f"unknown step '{target}' (next target)"))
        for attr in ("prompt", "confirm_prompt", "invalid_prompt", "hold_prompt", "retry_prompt"):
            check_prompt(base + (attr,), getattr(step, attr, None))
        for attr in ("text", "hold_text"):
            check_text(base + (attr,), getattr(step, attr, None))
        if isinstance(step, (SayStep, EndStep, EscalateStep)) and not (step.prompt or step.text):
            if isinstance(step, SayStep):
                issues.append((base, "a say step needs 'prompt' or 'text'"))
        if isinstance(step, (MenuStep, IntentStep, CollectStep, ConfirmStep, VerifyStep)) and not (
            step.prompt or step.text
        ):
            issues.append((base, f"a {step.kind} step needs 'prompt' or 'text' to ask its question"))
        if isinstance(step, MenuStep):
            keys: dict[str, int] = {}
            for i, opt in enumerate(step.options):
                oloc = base + ("options", i)
                check_prompt(oloc + ("prompt",), opt.prompt)
                check_text(oloc + ("text",), opt.text)
                check_cond(oloc + ("when",), opt.when)
                if not (opt.key or opt.phrases or opt.intents):
                    issues.append((oloc, "a menu option needs a 'key', 'phrases' or 'intents' to be chosen"))
                for intent in opt.intents:
                    if intent not in known_intents:
                        issues.append((oloc + ("intents",), _unknown_intent(intent, known_intents)))
                if opt.key and opt.key in keys and not (opt.when or step.options[keys[opt.key]].when):
                    issues.append((oloc + ("key",), f"key '{opt.key}' is already used by option {keys[opt.key]}"))
                if opt.key:
                    keys.setdefault(opt.key, i)
        if isinstance(step, IntentStep):
            for intent in step.routes:
                if intent not in known_intents:
                    issues.append((base + ("routes", intent), _unknown_intent(intent, known_intents)))
        if isinstance(step, BranchStep):
            for i, case in enumerate(step.cases):
                check_cond(base + ("cases", i, "when"), case.when)
        if isinstance(step, (LookupStep, VerifyStep)):
            for key, template in step.params.items():
                loc = base + ("params", key)
                try:
                    paths = Template.check(template)
                except ExpressionError as exc:
                    issues.append((loc, str(exc)))
                    continue
                # Card data never leaves the engine; only the derived '<slot>_last4' may.
                for path in paths:
                    root = path.split(".")[0]
                    if root in pci_slots:
                        issues.append((loc, f"'{path}' is card data (pci): send '{root}_last4' instead"))
                    elif root not in roots:
                        issues.append((loc, f"unknown name '{root}' in template (known: {', '.join(sorted(roots))})"))

    if flow.start in steps:
        seen = {flow.start}
        todo = [flow.start]
        while todo:
            for _, target in successors(steps[todo.pop()]):
                if target in steps and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for sid in steps:
            if sid not in seen:
                issues.append((("steps", sid), f"step '{sid}' is unreachable from start '{flow.start}'"))
        issues += _unverified_paths(flow)
    return issues


def _unknown_intent(intent: str, known: set[str]) -> str:
    listed = ", ".join(sorted(known)) or "none: declare them under intents: or import intent_libraries:"
    return f"unknown intent '{intent}' (this flow's intents: {listed})"


def _unverified_paths(flow: Flow) -> list[tuple[Loc, str]]:
    """Lookups marked `requires_verification` that some path from start reaches without passing a verify
    step's `next` (its `on_locked` and `on_error` edges lead on unverified)."""
    steps = flow.steps
    seen = {flow.start}
    todo = [flow.start]
    issues: list[tuple[Loc, str]] = []
    while todo:
        sid = todo.pop()
        step = steps[sid]
        if isinstance(step, LookupStep) and step.requires_verification:
            issues.append(
                (
                    ("steps", sid, "requires_verification"),
                    f"step '{sid}' can be reached without verifying the caller: put a verify step before it",
                )
            )
        for loc, target in successors(step):
            if isinstance(step, VerifyStep) and loc == ("next",):
                continue
            if target in steps and target not in seen:
                seen.add(target)
                todo.append(target)
    return issues
