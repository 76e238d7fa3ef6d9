"""Runs a flow for one call: caller input in, actions out.

The engine holds no per-call state of its own (one engine serves every call on a flow): the position in the
flow lives in ``ctx.flags["flow_state"]``, everything the caller gave in ``ctx`` (slots, turns, customer).
`start` and `handle` are async generators so the session can speak a holding line while the backend lookup
that follows it is still running.

PCI: while a `pci: true` collect step is waiting, caller input is never sent to the NLU, never logged, and the
turn and slot hold only a mask. Only the last four digits are kept (`<slot>_last4`), and only when the step
asks for them, because the card-block backend needs them; they are never spoken.

Verification (`verify` steps): the PIN, account digits or texted code is handled like card data (keypad only,
masked turn, never logged or classified) and goes only to the backend's check. `ctx.verification` records
whether and how the caller was verified; each outcome is yielded as a `VerificationEvent` for the audit
trail; lookups marked `requires_verification` never run for an unverified caller.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from flows.actions import (
    Action,
    Escalate,
    Hangup,
    Listen,
    OfferCallback,
    Say,
    SlotKind,
    ValueShape,
    VerificationEvent,
)
from flows.context import CallContext, Customer, Turn
from flows.gateway import BackendBadResponse, BackendError, BackendGateway, BackendTimeout
from flows.identity import customer_from_result
from flows.pci import mask_card_numbers, mask_keyed_digits
from flows.schema import (
    VERIFY_DIGITS,
    BranchStep,
    CollectStep,
    Condition,
    ConfirmStep,
    EndStep,
    EscalateStep,
    Flow,
    IntentStep,
    LookupStep,
    MenuOption,
    MenuStep,
    SayStep,
    Step,
    Template,
    VerifyStep,
)
from models.intent import IntentResult, parse_yes_no

STATE_KEY = "flow_state"
_MAX_HOPS = 100  # steps entered without caller input: a loop in the flow graph, not a real call


@dataclass(frozen=True)
class CallerInput:
    kind: Literal["speech", "dtmf", "silence"]
    text: str = ""
    digits: str = ""
    asr_confidence: float | None = None


class Nlu(Protocol):
    """What the engine needs from language understanding. Either method may be sync or async."""

    def classify(self, text: str) -> IntentResult | Awaitable[IntentResult]: ...

    def yes_no(self, text: str) -> bool | None | Awaitable[bool | None]: ...


@dataclass(frozen=True)
class Understanding:
    intent: str
    confidence: float
    ranked: tuple[tuple[str, float], ...]  # best first, top intent included


@dataclass(frozen=True)
class PendingValue:
    """A collected value awaiting the caller's confirmation. PCI: only its length and last four digits."""

    value: str = ""
    count: int = 0
    last4: str = ""


@dataclass(frozen=True)
class Clarification:
    """The intents offered when the classifier was unsure, best first, and how unsure it was."""

    guesses: tuple[str, ...]
    confidence: float | None


BackendResult = dict[str, Any]  # a backend's JSON object, as `BackendGateway.call` returns it


@dataclass
class FlowState:
    """Where one call is in the flow. Lives in ctx.flags so it survives as long as the call."""

    flow: str
    step: str | None = None
    waiting: Literal["input", "confirm_value", "clarify", "callback"] | None = None
    done: bool = False
    no_input: int = 0
    no_match: int = 0
    pending_value: PendingValue | None = None
    clarify: Clarification | None = None
    callback_reason: str | None = None
    callback_trigger: str | None = None
    lookups: dict[str, BackendResult] = field(default_factory=dict)  # by the lookup step's `save_as`
    last_lookup: BackendResult | None = None
    pending_resolution: str | None = None
    goto: tuple[str, tuple[str, Understanding | None] | None] | None = None
    understood: bool = True


_NUMBER_WORDS = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "nought": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_KEY_WORDS = {
    **{k: str(v) for k, v in _NUMBER_WORDS.items() if k not in ("oh", "o", "nought")},
    "star": "*",
    "hash": "#",
    "pound": "#",
}


_VALUE_EXPECTS: dict[str, SlotKind] = {"digits": "digits", "alnum": "order_number"}


def _value_shape(step: CollectStep) -> ValueShape | None:
    """What listening needs to tell a whole spoken value from one still being read (None: it cannot tell)."""
    if step.pci or step.mode == "dtmf" or step.value not in ("digits", "alnum"):
        return None
    if step.pattern is None and (step.value != "digits" or step.max_digits is None):
        return None
    return ValueShape(step.value, step.pattern, step.max_digits if step.value == "digits" else None)


def spoken_key(text: str) -> str | None:
    """The keypad key a short answer names ("one", "option two", "press 3"), or None: a key only in a short answer
    ("I have 2 orders" is not a key) and only one ("one or two" is none)."""
    tokens = _words(text).split()
    if len(tokens) > 3:
        return None
    keys = [_KEY_WORDS.get(t, t) for t in tokens if t in _KEY_WORDS or re.fullmatch(r"\d", t)]
    return keys[0] if len(keys) == 1 else None


def spoken_digits(text: str) -> str:
    """Digits in a spoken or transcribed number, groups said with pauses joined: "one two three, double four"
    -> "12344", "1 2 3" -> "123", "twenty three" -> "23" (compound numbers read by text2num)."""
    out: list[str] = []
    repeat = 1
    for word in re.findall(r"[a-z]+|\d+", words_to_numbers(text.lower())):
        if word.isdigit():
            out.append(word * repeat if repeat > 1 and len(word) == 1 else word)
            repeat = 1
        elif word in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS[word]) * repeat)
            repeat = 1
        elif word in ("double", "triple"):
            repeat = 2 if word == "double" else 3
    return "".join(out)


def spoken_alnum(text: str) -> str:
    """An id like "A1001" from "a one zero zero one" or "A-1001": a single letter counts only before a digit."""
    tokens = re.findall(r"[a-z]+|\d+", words_to_numbers(text.lower()))
    out: list[str] = []
    for i, word in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if len(word) == 1 and word.isalpha() and word not in ("o",) and (nxt.isdigit() or nxt in _NUMBER_WORDS):
            out.append(word.upper())
        elif word.isdigit() or word in _NUMBER_WORDS or word in ("double", "triple"):
            out.append(spoken_digits(word) if not word.isdigit() else word)
    # "double"/"triple" need the next token: redo digit runs with spoken_digits for those
    if any(w in ("double", "triple") for w in tokens):
        letters = "".join(ch for ch in "".join(out) if ch.isalpha())
        return letters + spoken_digits(text)
    return "".join(out)


def spoken_number(text: str) -> str | None:
    """An amount: "20", "$20.50", "twenty five", "one hundred and fifty" -> "20", "20.50", "25", "150".

    Number words are read by text2num (maintained, and it reads German and Spanish too), not by a word table.
    """
    m = re.search(r"\d+(?:\.\d{1,2})?", text.replace(",", ""))
    if m:
        return m.group(0)
    words = " ".join(re.findall(r"[a-z]+", text.lower()))
    # text2num leaves a lone "one" alone (it is also a pronoun); as an amount it is a number.
    m = re.search(r"\d+", words_to_numbers(words) if words != "one" else "1")
    return m.group(0) if m else None


def words_to_numbers(text: str, language: str = "en") -> str:
    """Number words as digits ("twenty three" -> "23", "uno dos" -> "1 2"); other words untouched."""
    from text_to_num import alpha2digit

    converted: str = alpha2digit(text, language)
    return converted


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def customer_view(customer: Customer | None) -> dict[str, Any]:
    if customer is None:
        return {"known": False, "has_order_in_transit": False, "orders": [], "tickets": []}
    view = {name: getattr(customer, name) for name in Customer.__slots__}
    view["known"] = True
    view["first_name"] = (customer.name or "").split(" ")[0]
    view["has_order_in_transit"] = any(o.get("status") == "in_transit" for o in customer.orders if isinstance(o, dict))
    view["order_count"] = len(customer.orders)
    return view


def current_order(customer: Customer | None) -> dict[str, Any] | None:
    """The order a caller most likely means: one in transit, else the first on record."""
    if customer is None or not customer.orders:
        return None
    orders = [o for o in customer.orders if isinstance(o, dict)]
    return next((o for o in orders if o.get("status") == "in_transit"), orders[0] if orders else None)


class FlowEngine:
    def __init__(
        self,
        flow: Flow,
        nlu: Nlu,
        gateway: BackendGateway,
        *,
        answer_threshold: float,
        log: logging.Logger | None = None,
    ) -> None:
        if not 0.0 < answer_threshold <= 1.0:
            raise ValueError(f"answer_threshold must be in (0, 1], got {answer_threshold}")
        self.flow = flow
        # An NLU serving several flows (flows.testing.ModelNlu) is bound to this flow's intents.
        bind = getattr(nlu, "for_flow", None)
        self.nlu: Nlu = bind(flow) if callable(bind) else nlu
        self.gateway = gateway
        self.answer_threshold = answer_threshold
        self.log = log or logging.getLogger(__name__)

    @property
    def industry(self) -> str:
        return self.flow.industry

    # ------------------------------------------------------------ public

    def state(self, ctx: CallContext) -> FlowState:
        st = ctx.flags.get(STATE_KEY)
        if not isinstance(st, FlowState) or st.flow != self.flow.name:
            st = FlowState(flow=self.flow.name)
            ctx.flags[STATE_KEY] = st
        return st

    async def start(self, ctx: CallContext) -> AsyncIterator[Action]:
        """Greeting, customer lookup and first question. Calling it again restarts the flow (same ctx)."""
        st = FlowState(flow=self.flow.name)
        ctx.flags[STATE_KEY] = st
        ctx.industry = self.flow.industry
        self.log.info("call %s: flow %s v%s starts", ctx.call_sid, self.flow.name, self.flow.version)
        async for action in self._enter(ctx, st, self.flow.start, None):
            yield action

    async def handle(self, ctx: CallContext, inp: CallerInput) -> AsyncIterator[Action]:
        """One caller input (speech, keypad or silence): record the turn, act on it, yield what to do."""
        st = self.state(ctx)
        if st.done or st.step is None:
            self.log.warning("call %s: input after the flow ended (%s); ignored", ctx.call_sid, inp.kind)
            return
        step = self.flow.steps[st.step]
        pci = (isinstance(step, CollectStep) and step.pci and st.waiting in ("input", "confirm_value")) or (
            isinstance(step, VerifyStep) and st.waiting == "input"
        )
        if not pci:
            # Masked by what it is, not by which step is waiting: a card number typed or said anywhere else
            # reaches no turn, slot, NLU or log in clear.
            inp = replace(inp, text=mask_card_numbers(inp.text), digits=mask_keyed_digits(inp.digits))
        turn: Turn | None = None
        if inp.kind != "silence":
            st.no_input = 0
            turn = Turn(
                index=len(ctx.turns), channel="dtmf" if inp.kind == "dtmf" else "voice", text=self._turn_text(inp, pci)
            )
            ctx.turns.append(turn)
        understanding: Understanding | None = None
        if inp.kind == "speech" and not pci and inp.text.strip():
            understanding = await self._classify(inp.text)
            if turn is not None:
                turn.intent, turn.confidence = understanding.intent, understanding.confidence

        pending_before = st.pending_resolution
        st.understood = True
        escalated = False
        async for action in self._dispatch(ctx, st, step, inp, understanding, pci):
            if isinstance(action, Say) and turn is not None:
                turn.reply = f"{turn.reply} {action.text}".strip()
            escalated = escalated or isinstance(action, Escalate)
            yield action
        # A resolution is confirmed by the caller carrying on without objecting; never by silence.
        if pending_before and inp.kind != "silence" and st.understood and not escalated:
            self._resolve(ctx, f"caller continued after '{pending_before}'")
            if st.pending_resolution == pending_before:
                st.pending_resolution = None

    # ------------------------------------------------------------ helpers

    def _turn_text(self, inp: CallerInput, pci: bool) -> str:
        if pci:
            if inp.kind == "dtmf":
                n = sum(ch.isdigit() for ch in inp.digits)
                return f"[keypad entry withheld: {n} digits]"
            return "[speech not used: keypad only]"
        return inp.text if inp.kind == "speech" else inp.digits

    async def _classify(self, text: str) -> Understanding:
        res = self.nlu.classify(text)
        result = await res if inspect.isawaitable(res) else res
        ranked = [(result.intent, float(result.confidence))]
        ranked += [(name, float(score)) for name, score in result.alternatives if name and name != result.intent]
        ranked.sort(key=lambda kv: kv[1], reverse=True)
        return Understanding(result.intent, float(result.confidence), tuple(ranked))

    async def _yes_no(self, inp: CallerInput) -> bool | None:
        if inp.kind == "dtmf":
            key = inp.digits.strip("#*")
            return True if key == "1" else False if key == "2" else None
        if inp.kind != "speech" or not inp.text.strip():
            return None
        res = self.nlu.yes_no(inp.text)
        return await res if inspect.isawaitable(res) else res

    def _namespace(self, ctx: CallContext, st: FlowState, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        ns: dict[str, Any] = dict(st.lookups)
        ns.update(ctx.slots)
        ns.update(
            customer=customer_view(ctx.customer),
            order=current_order(ctx.customer),
            lookup=st.last_lookup,
            slots=dict(ctx.slots),
            caller=ctx.caller,
            flow={"name": self.flow.name, "industry": self.flow.industry},
            verification={
                "verified": ctx.verification.verified,
                "method": ctx.verification.method if ctx.verification.verified else None,
                "locked": ctx.verification.locked,
            },
        )
        ns.update(extra or {})
        return ns

    def _render(self, ctx: CallContext, st: FlowState, source: str, extra: dict[str, Any] | None = None) -> str:
        missing: list[str] = []
        text = Template(source).render(self._namespace(ctx, st, extra), missing)
        if missing:
            self.log.warning("call %s: step %s: no value for %s", ctx.call_sid, st.step, ", ".join(missing))
        return text

    def _say(
        self,
        ctx: CallContext,
        st: FlowState,
        prompt: str | None = None,
        text: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Say | None:
        if prompt:
            source = self.flow.prompt_text(prompt)
            if Template(source).is_fixed:
                return Say(source, prompt_id=prompt)
            return Say(self._render(ctx, st, source, extra))
        if text:
            return Say(self._render(ctx, st, text, extra))
        return None

    def _condition(self, ctx: CallContext, st: FlowState, source: str) -> bool:
        return Condition(source).evaluate(self._namespace(ctx, st))

    def _visible(self, ctx: CallContext, st: FlowState, step: MenuStep) -> list[MenuOption]:
        return [o for o in step.options if o.when is None or self._condition(ctx, st, o.when)]

    def _resolve(self, ctx: CallContext, why: str) -> None:
        if not ctx.resolved:
            self.log.info("call %s: resolved (%s)", ctx.call_sid, why)
        ctx.resolved = True

    def _escalate(
        self,
        ctx: CallContext,
        st: FlowState,
        reason: str,
        trigger: str,
        guess: str | None = None,
        confidence: float | None = None,
        queue: str | None = None,
    ) -> Escalate:
        st.done, st.waiting, st.pending_resolution = True, None, None
        self.log.info("call %s: escalating at %s: %s (%s)", ctx.call_sid, st.step, reason, trigger)
        return Escalate(
            reason=reason, trigger=trigger, intent_guess=guess, confidence=confidence, queue=queue or self.flow.queue
        )

    def _hangup(self, ctx: CallContext, st: FlowState, reason: str) -> Hangup:
        st.done, st.waiting = True, None
        self.log.info("call %s: flow ends at %s: %s", ctx.call_sid, st.step, reason)
        return Hangup(reason)

    # ------------------------------------------------------------ asking

    async def _ask(self, ctx: CallContext, st: FlowState, step: Step) -> AsyncIterator[Action]:
        """(Re)ask whatever the call is waiting for; every Listen carries the words to expect there."""
        words = [*self.flow.asr_vocabulary, *step.asr_vocabulary]
        vocabulary = ", ".join(dict.fromkeys(words)) or None
        async for action in self._ask_actions(ctx, st, step):
            yield replace(action, vocabulary=vocabulary) if isinstance(action, Listen) else action

    async def _ask_actions(self, ctx: CallContext, st: FlowState, step: Step) -> AsyncIterator[Action]:
        if st.waiting == "callback":
            yield Say(self.flow.prompt_text("_callback_question"), prompt_id="_callback_question")
            yield Listen("both", max_digits=1, finish_on="", expects="yes_no")
            return
        if st.waiting == "clarify" and st.clarify:
            first, *rest = [self.flow.intent_label(i) for i in st.clarify.guesses]
            pid = "_clarify" if rest else "_clarify_one"
            say = self._say(ctx, st, prompt=pid, extra={"first": first, "second": rest[0] if rest else ""})
            assert say is not None
            yield say
            yield Listen("voice", timeout_s=getattr(step, "timeout_s", 8.0))
            return
        if st.waiting == "confirm_value" and isinstance(step, CollectStep) and st.pending_value:
            pv = st.pending_value
            if step.pci:
                say = self._say(ctx, st, prompt=step.confirm_prompt or "_confirm_count", extra={"count": pv.count})
            else:
                readback = " ".join(pv.value) if step.value in ("digits", "alnum") else pv.value
                say = self._say(ctx, st, prompt=step.confirm_prompt or "_confirm_value", extra={"value": readback})
            assert say is not None
            yield say
            yield Listen("dtmf" if step.pci else "both", max_digits=1, finish_on="", pci=step.pci, expects="yes_no")
            return
        say = self._say(ctx, st, getattr(step, "prompt", None), getattr(step, "text", None))
        if say is not None:
            yield say
        if isinstance(step, MenuStep):
            visible = self._visible(ctx, st, step)
            for opt in visible:
                line = self._say(ctx, st, opt.prompt, opt.text)
                if line is not None:
                    yield line
            # A menu answered by "yes"/"no" ("anything else?") is a yes/no question to listening.
            yes_no = any(parse_yes_no(p) is not None for opt in visible for p in opt.phrases)
            yield Listen(
                "both",
                max_digits=1,
                finish_on="",
                timeout_s=step.timeout_s,
                expects="yes_no" if yes_no else None,
                keys=tuple(opt.key for opt in visible if opt.key is not None),
            )
        elif isinstance(step, IntentStep):
            yield Listen("voice", timeout_s=step.timeout_s)
        elif isinstance(step, CollectStep):
            yield Listen(
                step.mode,
                slot=step.slot,
                max_digits=step.max_digits,
                finish_on=step.finish_on,
                pci=step.pci,
                timeout_s=step.timeout_s,
                expects=step.expects or _VALUE_EXPECTS.get(step.value),
                shape=_value_shape(step),
            )
        elif isinstance(step, ConfirmStep):
            yield Listen("both", max_digits=1, finish_on="", timeout_s=step.timeout_s, expects="yes_no")
        elif isinstance(step, VerifyStep):
            # One key more than the longest answer: the finish key after a full entry ends it, and is not left
            # over for the next question.
            longest = VERIFY_DIGITS[step.method][1]
            yield Listen(
                "dtmf",
                slot=f"verify_{step.method}",
                max_digits=longest + 1 if step.finish_on else longest,
                finish_on=step.finish_on,
                pci=True,
                timeout_s=step.timeout_s,
            )

    async def _no_input(self, ctx: CallContext, st: FlowState, step: Step) -> AsyncIterator[Action]:
        st.no_input += 1
        policy = self.flow.no_input
        if st.no_input <= policy.reprompts:
            yield Say(self.flow.prompt_text("_no_input"), prompt_id="_no_input")
            async for action in self._ask(ctx, st, step):
                yield action
            return
        if policy.then == "escalate":
            yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
            yield self._escalate(ctx, st, f"no answer from the caller after {st.no_input} prompts", "no_input")
        else:
            st.pending_resolution = None  # silence never confirms anything
            yield Say(self.flow.prompt_text("_no_input_goodbye"), prompt_id="_no_input_goodbye")
            yield self._hangup(ctx, st, "no input")

    async def _no_match(
        self, ctx: CallContext, st: FlowState, step: Step, prompt: str = "_no_match", guess: Understanding | None = None
    ) -> AsyncIterator[Action]:
        st.understood = False
        st.no_match += 1
        if st.no_match > self.flow.max_no_match:
            yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
            yield self._escalate(
                ctx,
                st,
                f"could not understand the caller after {st.no_match} attempts",
                "no_match",
                guess.intent if guess else None,
                guess.confidence if guess else None,
            )
            return
        say = self._say(ctx, st, prompt=prompt)
        if say is not None:
            yield say
        async for action in self._ask(ctx, st, step):
            yield action

    # ------------------------------------------------------------ input

    async def _dispatch(
        self, ctx: CallContext, st: FlowState, step: Step, inp: CallerInput, und: Understanding | None, pci: bool
    ) -> AsyncIterator[Action]:
        st.goto = None
        if inp.kind == "silence":
            async for a in self._no_input(ctx, st, step):
                yield a
            return
        if (
            und is not None
            and und.intent == "speak_to_agent"
            and und.confidence >= self.answer_threshold
            and not await self._answers_question(st, step, inp)
        ):
            yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
            yield self._escalate(ctx, st, "caller asked for a person", "caller_request", und.intent, und.confidence)
            return
        if st.waiting == "callback":
            handler = self._on_callback_answer(ctx, st, step, inp)
        elif st.waiting == "clarify" and isinstance(step, IntentStep):
            handler = self._on_clarify_answer(ctx, st, step, inp, und)
        elif st.waiting == "confirm_value" and isinstance(step, CollectStep):
            handler = self._on_value_confirmation(ctx, st, step, inp, pci)
        elif isinstance(step, MenuStep):
            handler = self._on_menu(ctx, st, step, inp, und)
        elif isinstance(step, IntentStep):
            handler = self._on_intent_input(ctx, st, step, inp, und)
        elif isinstance(step, CollectStep):
            handler = self._on_collect(ctx, st, step, inp, pci)
        elif isinstance(step, ConfirmStep):
            handler = self._on_confirm(ctx, st, step, inp)
        elif isinstance(step, VerifyStep) and st.waiting == "input":
            handler = self._on_verify(ctx, st, step, inp)
        else:
            # The session stopped reading our actions mid-step (caller hung up or barged in during a lookup):
            # run the step again rather than leave the caller in silence.
            self.log.warning("call %s: input while step %s was unfinished; running it again", ctx.call_sid, st.step)
            if st.step is None:
                return
            handler = self._enter(ctx, st, st.step, None)
        async for a in handler:
            yield a
        if st.goto is not None:
            target, utterance = st.goto
            st.goto = None
            async for a in self._enter(ctx, st, target, utterance):
                yield a

    async def _answers_question(self, st: FlowState, step: Step, inp: CallerInput) -> bool:
        """A plain answer to what was asked ("B two zero zero one", "yes") is never a request for a person,
        whatever the intent model makes of it."""
        if st.waiting in ("confirm_value", "callback") or (st.waiting == "input" and isinstance(step, ConfirmStep)):
            # "no, get me a person" is a request; a short "yes that's right" is an answer.
            short = inp.kind == "dtmf" or len(_words(inp.text).split()) <= 3
            return short and await self._yes_no(inp) is not None
        if st.waiting == "input" and isinstance(step, CollectStep):
            value = self._collected_value(step, inp)
            return value is not None and self._valid(step, value)
        return False

    def _goodbye(self, und: Understanding | None) -> bool:
        return und is not None and und.intent == "goodbye" and und.confidence >= self.answer_threshold

    async def _say_goodbye(self, ctx: CallContext, st: FlowState) -> AsyncIterator[Action]:
        if st.pending_resolution:
            self._resolve(ctx, "caller said goodbye after a resolution")
        yield Say(self.flow.prompt_text("_goodbye"), prompt_id="_goodbye")
        yield self._hangup(ctx, st, "caller said goodbye")

    def _match_option(self, options: list[MenuOption], text: str, und: Understanding | None) -> MenuOption | None:
        if und is not None and und.confidence >= self.answer_threshold:
            for opt in options:
                if und.intent in opt.intents:
                    return opt
        words = f" {_words(text)} "
        for opt in options:
            for phrase in opt.phrases:
                if f" {_words(phrase)} " in words:
                    return opt
        key = spoken_key(text)
        return next((o for o in options if o.key == key), None) if key is not None else None

    async def _on_menu(
        self, ctx: CallContext, st: FlowState, step: MenuStep, inp: CallerInput, und: Understanding | None
    ) -> AsyncIterator[Action]:
        options = self._visible(ctx, st, step)
        chosen: MenuOption | None = None
        if inp.kind == "dtmf":
            key = inp.digits.rstrip("#")[:1] if inp.digits not in ("#", "*") else inp.digits
            chosen = next((o for o in options if o.key == key), None)
        elif inp.text.strip():
            chosen = self._match_option(options, inp.text, und)
            if chosen is None and self._goodbye(und):
                async for a in self._say_goodbye(ctx, st):
                    yield a
                return
            if chosen is None and step.otherwise:
                st.goto = (step.otherwise, (inp.text, und))
                return
        if chosen is None:
            async for a in self._no_match(ctx, st, step, guess=und):
                yield a
            return
        st.goto = (chosen.next, None)

    async def _on_intent_input(
        self, ctx: CallContext, st: FlowState, step: IntentStep, inp: CallerInput, und: Understanding | None
    ) -> AsyncIterator[Action]:
        if inp.kind != "speech" or und is None:
            async for a in self._no_match(ctx, st, step):
                yield a
            return
        async for a in self._route(ctx, st, step, inp.text, und):
            yield a

    async def _route(
        self, ctx: CallContext, st: FlowState, step: IntentStep, text: str, und: Understanding
    ) -> AsyncIterator[Action]:
        """Act on a classified utterance at an intent step: route, or clarify once when unsure."""
        if und.confidence >= self.answer_threshold:
            if und.intent in step.routes:
                st.goto = (step.routes[und.intent], None)
            elif und.intent == "goodbye":
                async for a in self._say_goodbye(ctx, st):
                    yield a
            elif step.otherwise:
                st.goto = (step.otherwise, (text, und))
            else:
                yield Say(self.flow.prompt_text("_not_handled"), prompt_id="_not_handled")
                yield self._escalate(
                    ctx,
                    st,
                    f"caller wants {self.flow.intent_label(und.intent)}, which this line does not handle",
                    "unhandled_intent",
                    und.intent,
                    und.confidence,
                )
            return
        guesses = [intent for intent, _ in und.ranked[:2]]
        ctx.clarifications += 1
        st.clarify = Clarification(tuple(guesses), und.confidence)
        st.waiting = "clarify"
        self.log.info("call %s: clarifying between %s (confidence %.2f)", ctx.call_sid, guesses, und.confidence)
        async for a in self._ask(ctx, st, step):
            yield a

    async def _on_clarify_answer(
        self, ctx: CallContext, st: FlowState, step: IntentStep, inp: CallerInput, und: Understanding | None
    ) -> AsyncIterator[Action]:
        clarify = st.clarify or Clarification((), None)
        guesses = list(clarify.guesses)
        choice: str | None = None
        if (
            und is not None
            and und.confidence >= self.answer_threshold
            and (und.intent in step.routes or und.intent in guesses)
        ):
            choice = und.intent
        elif inp.kind == "dtmf" and inp.digits.strip("#") in ("1", "2"):
            idx = int(inp.digits.strip("#")) - 1
            choice = guesses[idx] if idx < len(guesses) else None
        elif inp.kind == "speech":
            choice = await self._pick_guess(inp, guesses)
        if choice is not None and (choice in step.routes or step.otherwise or choice == "goodbye"):
            st.clarify, st.waiting = None, "input"
            picked = Understanding(choice, 1.0, ((choice, 1.0),))
            async for a in self._route(ctx, st, step, inp.text, picked):
                yield a
            return
        guess = guesses[0] if guesses else None
        if und is not None and und.intent in guesses:
            guess = und.intent
        yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
        yield self._escalate(ctx, st, "low confidence after clarification", "low_confidence", guess, clarify.confidence)

    async def _pick_guess(self, inp: CallerInput, guesses: list[str]) -> str | None:
        """'the first one', 'the delivery problem', or yes to a single guess."""
        words = set(_words(inp.text).split())
        if guesses and words & {"first", "former"}:
            return guesses[0]
        if len(guesses) > 1 and words & {"second", "latter", "last"}:
            return guesses[1]
        stop = {"a", "an", "the", "with", "your", "my", "or", "of", "to", "and", "about", "it", "is"}
        hits = []
        for intent in guesses:
            label = set(_words(self.flow.intent_label(intent)).split()) | set(intent.split("_"))
            hits.append(len({w for w in label - stop if len(w) > 2} & words))
        if hits and max(hits) > 0 and hits.count(max(hits)) == 1:
            return guesses[hits.index(max(hits))]
        if len(guesses) == 1 and await self._yes_no(inp) is True:
            return guesses[0]
        return None

    def _collected_value(self, step: CollectStep, inp: CallerInput) -> str | None:
        if inp.kind == "dtmf":
            if step.mode == "voice":
                return None
            raw = inp.digits
            if step.finish_on and raw.endswith(step.finish_on):
                raw = raw[: -len(step.finish_on)]
            return raw if raw else None
        if step.mode == "dtmf":
            return None
        if step.value == "digits":
            return spoken_digits(inp.text) or None
        if step.value == "alnum":
            return spoken_alnum(inp.text) or None
        if step.value == "number":
            return spoken_number(inp.text)
        return inp.text.strip() or None

    def _valid(self, step: CollectStep, value: str) -> bool:
        if step.value == "digits" and not value.isdigit():
            return False
        if step.value == "alnum" and not value.isalnum():
            return False
        if step.max_digits is not None and step.value == "digits" and len(value) > step.max_digits:
            return False
        return step.pattern is None or re.fullmatch(step.pattern, value) is not None

    async def _on_collect(
        self, ctx: CallContext, st: FlowState, step: CollectStep, inp: CallerInput, pci: bool
    ) -> AsyncIterator[Action]:
        if pci and inp.kind != "dtmf":
            async for a in self._no_match(ctx, st, step, prompt="_keypad_only"):
                yield a
            return
        value = self._collected_value(step, inp)
        if value is None or not self._valid(step, value):
            if pci:
                self.log.info("call %s: %s: keypad entry rejected", ctx.call_sid, st.step)
            async for a in self._no_match(ctx, st, step, prompt=step.invalid_prompt or "_invalid_value"):
                yield a
            return
        pending = PendingValue(count=len(value), last4=value[-4:]) if pci else PendingValue(value=value)
        if not step.confirm:
            self._commit(ctx, step, pending)
            st.goto = (step.next, None)
            return
        st.pending_value, st.waiting = pending, "confirm_value"
        async for a in self._ask(ctx, st, step):
            yield a

    def _commit(self, ctx: CallContext, step: CollectStep, pending: PendingValue) -> None:
        if step.pci:
            ctx.slots[step.slot] = f"[withheld: {pending.count} digits]"
            if step.keep_last4:
                ctx.slots[f"{step.slot}_last4"] = pending.last4
        else:
            ctx.slots[step.slot] = pending.value

    async def _on_value_confirmation(
        self, ctx: CallContext, st: FlowState, step: CollectStep, inp: CallerInput, pci: bool
    ) -> AsyncIterator[Action]:
        if pci and inp.kind != "dtmf":
            async for a in self._no_match(ctx, st, step, prompt="_keypad_only"):
                yield a
            return
        answer = await self._yes_no(inp)
        if answer is None:
            async for a in self._no_match(ctx, st, step):
                yield a
            return
        pending, st.pending_value = st.pending_value, None
        if answer and pending is not None:
            self._commit(ctx, step, pending)
            st.goto = (step.next, None)
            return
        st.waiting = "input"
        st.no_match += 1
        if st.no_match > self.flow.max_no_match:
            yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
            yield self._escalate(ctx, st, f"could not capture {step.slot} after {st.no_match} attempts", "no_match")
            return
        async for a in self._ask(ctx, st, step):
            yield a

    async def _on_confirm(
        self, ctx: CallContext, st: FlowState, step: ConfirmStep, inp: CallerInput
    ) -> AsyncIterator[Action]:
        answer = await self._yes_no(inp)
        if answer is None:
            async for a in self._no_match(ctx, st, step):
                yield a
            return
        if answer and step.resolves_on_yes:
            self._resolve(ctx, f"caller confirmed at '{st.step}'")
        st.goto = (step.on_yes if answer else step.on_no, None)

    async def _on_callback_answer(
        self, ctx: CallContext, st: FlowState, step: Step, inp: CallerInput
    ) -> AsyncIterator[Action]:
        answer = await self._yes_no(inp)
        if answer is None:
            async for a in self._no_match(ctx, st, step):
                yield a
            return
        reason = st.callback_reason or "backend problem"
        if answer:
            ctx.flags["callback_requested"] = reason
            yield Say(self.flow.prompt_text("_callback_confirmed"), prompt_id="_callback_confirmed")
            yield self._hangup(ctx, st, "callback requested")
            return
        yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
        yield self._escalate(
            ctx, st, f"{reason}; the caller declined a callback", st.callback_trigger or "backend_error"
        )

    # ------------------------------------------------------------ stepping

    async def _enter(
        self, ctx: CallContext, st: FlowState, sid: str, utterance: tuple[str, Understanding | None] | None
    ) -> AsyncIterator[Action]:
        """Run steps from `sid` until one needs caller input or the flow ends."""
        for _ in range(_MAX_HOPS):
            step = self.flow.steps[sid]
            st.step, st.waiting, st.goto = sid, None, None
            st.no_match = st.no_input = 0
            st.clarify = st.pending_value = None
            if step.resolves:
                st.pending_resolution = sid
            self.log.debug("call %s: step %s (%s)", ctx.call_sid, sid, step.kind)

            if isinstance(step, SayStep):
                say = self._say(ctx, st, step.prompt, step.text)
                if say is not None:
                    yield say
                sid, utterance = step.next, None
                continue
            if isinstance(step, BranchStep):
                sid = next((c.next for c in step.cases if self._condition(ctx, st, c.when)), step.otherwise)
                continue
            if isinstance(step, LookupStep) and step.requires_verification and not ctx.verification.verified:
                # The loader refuses such a flow; this is the belt to its braces.
                self.log.error("call %s: step %s needs a verified caller; not run", ctx.call_sid, sid)
                yield Say(self.flow.prompt_text("_agent"), prompt_id="_agent")
                yield self._escalate(ctx, st, f"step '{sid}' needs a verified caller", "flow_error")
                return
            if isinstance(step, VerifyStep):
                target = None
                async for a in self._verify_enter(ctx, st, step):
                    if isinstance(a, str):
                        target = a
                    else:
                        yield a
                if target is None:
                    return  # asking for the secret, or handed to a person
                sid, utterance = target, None
                continue
            if isinstance(step, LookupStep):
                target = None
                async for a in self._lookup(ctx, st, step):
                    if isinstance(a, str):
                        target = a
                    else:
                        yield a
                if target is None:
                    return  # waiting on the callback question
                sid, utterance = target, None
                continue
            if isinstance(step, EscalateStep):
                yield self._say(ctx, st, step.prompt, step.text) or Say(self.flow.prompt_text("_agent"), "_agent")
                yield self._escalate(ctx, st, step.reason, step.trigger, queue=step.queue)
                return
            if isinstance(step, EndStep):
                say = self._say(ctx, st, step.prompt, step.text)
                if say is not None:
                    yield say
                if st.pending_resolution:
                    self._resolve(ctx, f"flow completed after '{st.pending_resolution}'")
                    st.pending_resolution = None
                yield self._hangup(ctx, st, step.reason)
                return
            st.waiting = "input"
            if isinstance(step, IntentStep) and utterance is not None and utterance[1] is not None:
                async for a in self._route(ctx, st, step, utterance[0], utterance[1]):
                    yield a
                if st.goto is None:
                    return
                (sid, utterance), st.goto = st.goto, None
                continue
            async for a in self._ask(ctx, st, step):
                yield a
            return
        self.log.error("call %s: flow %s loops without caller input at %s", ctx.call_sid, self.flow.name, sid)
        yield self._escalate(ctx, st, "the flow looped without asking the caller anything", "flow_error")

    # ------------------------------------------------------------ verification

    async def _verify_enter(self, ctx: CallContext, st: FlowState, step: VerifyStep) -> AsyncIterator[Action | str]:
        """Yields actions, then the next step id (a str) when the step needs no input, else nothing more."""
        v = ctx.verification
        if v.verified:
            yield step.next
            return
        if v.locked:
            async for a in self._verify_locked(ctx, st, step):
                yield a
            return
        if step.method == "sms_code":
            try:
                params = {k: self._render(ctx, st, t) for k, t in step.params.items()}
                result = await self.gateway.call(step.backend, step.send_operation, params, call_sid=ctx.call_sid)
                if not isinstance(result, dict) or result.get("sent") is not True:
                    raise BackendBadResponse(step.backend, step.send_operation, "the code was not sent")
            except BackendError as exc:
                async for a in self._verify_unavailable(ctx, st, step, exc):
                    yield a
                return
            yield Say(self.flow.prompt_text("_verify_code_sent"), prompt_id="_verify_code_sent")
        st.waiting = "input"
        async for a in self._ask(ctx, st, step):
            yield a

    async def _on_verify(
        self, ctx: CallContext, st: FlowState, step: VerifyStep, inp: CallerInput
    ) -> AsyncIterator[Action]:
        if inp.kind != "dtmf":
            async for a in self._no_match(ctx, st, step, prompt="_keypad_only"):
                yield a
            return
        v = ctx.verification
        lo, hi = VERIFY_DIGITS[step.method]
        secret = (
            inp.digits[: -len(step.finish_on)] if step.finish_on and inp.digits.endswith(step.finish_on) else inp.digits
        )
        verified = False
        if secret.isdigit() and lo <= len(secret) <= hi:  # a malformed entry is a wrong one, never sent
            params: dict[str, Any] = {k: self._render(ctx, st, t) for k, t in step.params.items()}
            params.update(method=step.method, secret=secret)
            try:
                result = await self.gateway.call(step.backend, step.operation, params, call_sid=ctx.call_sid)
            except BackendError as exc:
                async for item in self._verify_unavailable(ctx, st, step, exc):
                    if not isinstance(item, str):  # a target step is already in st.goto
                        yield item
                return
            finally:
                params.pop("secret", None)
            verified = isinstance(result, dict) and result.get("verified") is True
        del secret
        v.method = step.method
        attempt = v.failures + 1
        if verified:
            v.verified = True
            self.log.info("call %s: caller verified by %s (attempt %d)", ctx.call_sid, step.method, attempt)
            yield VerificationEvent("verified", step.method, attempt, step.attempts)
            st.goto = (step.next, None)
            return
        v.failures += 1
        self.log.info("call %s: verification by %s failed (attempt %d)", ctx.call_sid, step.method, attempt)
        yield VerificationEvent("failed", step.method, attempt, step.attempts)
        if v.failures >= step.attempts:
            v.locked = True
            self.log.warning("call %s: verification locked after %d failures", ctx.call_sid, v.failures)
            yield VerificationEvent("locked", step.method, attempt, step.attempts)
            async for item in self._verify_locked(ctx, st, step):
                if not isinstance(item, str):
                    yield item
            return
        st.understood = False
        yield Say(
            self.flow.prompt_text(step.retry_prompt or "_verify_wrong"), prompt_id=step.retry_prompt or "_verify_wrong"
        )
        async for a in self._ask(ctx, st, step):
            yield a

    async def _verify_locked(self, ctx: CallContext, st: FlowState, step: VerifyStep) -> AsyncIterator[Action | str]:
        if step.on_locked:
            st.goto = (step.on_locked, None)
            yield step.on_locked
            return
        yield Say(self.flow.prompt_text("_verify_locked"), prompt_id="_verify_locked")
        yield self._escalate(ctx, st, "verification failed", "verification_failed")

    async def _verify_unavailable(
        self, ctx: CallContext, st: FlowState, step: VerifyStep, exc: BackendError
    ) -> AsyncIterator[Action | str]:
        ctx.backend_failures += 1
        reason = f"{exc.backend}.{exc.operation} failed ({exc.kind})"
        self.log.warning("call %s: step %s: caller verification unavailable: %s", ctx.call_sid, st.step, reason)
        v = ctx.verification
        yield VerificationEvent("unavailable", step.method, v.failures + 1, step.attempts)
        if step.on_error:
            st.goto = (step.on_error, None)
            yield step.on_error
            return
        yield Say(self.flow.prompt_text("_verify_unavailable"), prompt_id="_verify_unavailable")
        yield self._escalate(ctx, st, f"could not verify the caller: {reason}", "verification_unavailable")

    async def _lookup(self, ctx: CallContext, st: FlowState, step: LookupStep) -> AsyncIterator[Action | str]:
        """Yields actions, then the id of the next step (a str), or nothing more when a callback is offered."""
        hold = self._say(ctx, st, step.hold_prompt, step.hold_text)
        if hold is not None:
            yield hold
        params = {k: self._render(ctx, st, v) for k, v in step.params.items()}
        name = f"{step.backend}.{step.operation}"
        try:
            result = await self.gateway.call(step.backend, step.operation, params, call_sid=ctx.call_sid)
            if not isinstance(result, dict):
                got = type(result).__name__
                raise BackendBadResponse(step.backend, step.operation, f"expected an object, got {got}")
            if result.get("found") is False and step.on_not_found:
                # Nobody by that number, no such order: an answer the flow branches on, not a backend failure.
                if step.save_as:
                    st.lookups[step.save_as] = result
                st.last_lookup = result
                yield step.on_not_found
                return
            missing = [k for k in step.expects if result.get(k) in (None, "")]
            if missing:
                raise BackendBadResponse(step.backend, step.operation, f"result lacks {', '.join(missing)}")
            if step.sets_customer:
                try:
                    customer = customer_from_result(result, phone=ctx.caller)
                except ValueError as exc:
                    raise BackendBadResponse(step.backend, step.operation, str(exc)) from None
                if customer is None:
                    raise BackendBadResponse(step.backend, step.operation, "no customer in the result")
                ctx.customer = customer
        except BackendError as exc:
            ctx.backend_failures += 1
            timeout = isinstance(exc, BackendTimeout)
            reason = f"{name} timed out" if timeout else f"{name} failed ({exc.kind})"
            ctx.flags["last_backend_error"] = reason
            self.log.warning("call %s: step %s: %s: %s", ctx.call_sid, st.step, reason, exc)
            target = step.on_timeout if timeout else step.on_error
            if target:
                yield target
                return
            yield Say(
                self.flow.prompt_text("_backend_holding" if timeout else "_backend_error"),
                prompt_id="_backend_holding" if timeout else "_backend_error",
            )
            yield OfferCallback(reason)
            st.callback_reason = reason
            st.callback_trigger = "backend_timeout" if timeout else "backend_error"
            st.waiting = "callback"
            async for a in self._ask(ctx, st, step):
                yield a
            return
        if step.save_as:
            st.lookups[step.save_as] = result
        st.last_lookup = result
        yield step.next
