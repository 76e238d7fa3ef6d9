"""What a caller notices from the engine: menus built from their account, routing, clarification, PCI masking."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

from flows import cli
from flows.actions import Escalate, Hangup, Listen, Say
from flows.cli import load_flow
from flows.context import CallContext
from flows.engine import CallerInput, FlowEngine
from flows.testing import ModelNlu, ScriptedGateway

IN_TRANSIT = {
    "customer_id": "C1",
    "name": "Maria Garcia",
    "orders": [{"order_id": "A1001", "item": "espresso machine", "status": "in_transit", "eta": "Friday"}],
}
DELIVERED = {
    "customer_id": "C2",
    "name": "James Chen",
    "orders": [{"order_id": "B2001", "item": "running shoes", "status": "delivered", "eta": "Monday"}],
}
CARD = "4539148803436467"


class RecordingNlu:
    """The real NLU, remembering what it was sent."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.texts = inner, []

    def classify(self, text: str) -> Any:
        self.texts.append(text)
        return self.inner.classify(text)

    def yes_no(self, text: str) -> bool | None:
        self.texts.append(text)
        return self.inner.yes_no(text)


def engine_for(name: str, nlu: Any, script: dict[str, Any], log: logging.Logger | None = None) -> FlowEngine:
    flow = load_flow(name)
    nlu = nlu.for_flow(flow) if isinstance(nlu, ModelNlu) else nlu
    return FlowEngine(flow, nlu, ScriptedGateway(script), answer_threshold=flow.answer_threshold, log=log)


async def run(gen: Any) -> list[Any]:
    return [a async for a in gen]


def said(actions: list[Any]) -> str:
    return " ".join(a.text for a in actions if isinstance(a, Say))


async def test_delivery_option_offered_only_when_an_order_is_in_transit(model_nlu) -> None:
    texts = {}
    for label, customer in (("transit", IN_TRANSIT), ("delivered", DELIVERED)):
        engine = engine_for("ecommerce_delivery", model_nlu, {"crm.customer_by_phone": {"ok": customer}})
        ctx = CallContext(call_sid=f"CA-{label}", caller="+14155550100")
        texts[label] = said(await run(engine.start(ctx)))
    assert "your delivery of espresso machine, press 1" in texts["transit"]
    assert "delivery of" not in texts["delivered"]
    assert "press 1" not in texts["delivered"]
    assert "To track an order, press 2" in texts["delivered"]


async def test_cant_pay_goes_to_billing_trouble_and_want_to_pay_does_not(model_nlu) -> None:
    replies = {}
    for text in ("I can't pay my bill", "I want to pay my bill"):
        engine = engine_for(
            "telecom_billing",
            model_nlu,
            {
                "crm.customer_by_phone": {"ok": {"customer_id": "C3", "name": "Priya"}},
                "crm.balance": {"ok": {"balance": 42.5, "currency": "USD"}},
                "crm.verify_caller": {"verify": {"account_digits": "7731"}},
            },
        )
        ctx = CallContext(call_sid="CA-bill", caller="+14155550102")
        await run(engine.start(ctx))
        asked = said(await run(engine.handle(ctx, CallerInput("speech", text=text))))
        assert ctx.turns[-1].text == text
        assert "last four digits of your account number" in asked  # both need a verified caller first
        replies[text] = said(await run(engine.handle(ctx, CallerInput("dtmf", digits="7731#"))))
    assert "payment arrangement" in replies["I can't pay my bill"]
    assert "balance is 42.5" not in replies["I can't pay my bill"]
    assert "balance is 42.5" in replies["I want to pay my bill"]


async def test_low_confidence_clarifies_once_then_escalates_with_the_guess(model_nlu) -> None:
    engine = engine_for("ecommerce_delivery", model_nlu, {"crm.customer_by_phone": {"ok": DELIVERED}})
    ctx = CallContext(call_sid="CA-unsure", caller="+14155550101")
    await run(engine.start(ctx))
    unclear = "it's about the order thing maybe"
    first_guess = model_nlu.for_flow(load_flow("ecommerce_delivery")).classify(unclear).intent
    question = await run(engine.handle(ctx, CallerInput("speech", text=unclear)))
    assert not any(isinstance(a, Escalate) for a in question)
    assert "just to be sure" in said(question)
    assert ctx.clarifications == 1
    answer = await run(engine.handle(ctx, CallerInput("speech", text="hmm I really couldn't tell you")))
    (esc,) = [a for a in answer if isinstance(a, Escalate)]
    assert esc.reason == "low confidence after clarification"
    assert esc.intent_guess == first_guess
    assert esc.intent_guess is not None and engine.flow.intent_label(esc.intent_guess) in said(question)
    assert ctx.clarifications == 1 and not ctx.resolved


async def test_card_digits_are_masked_everywhere(model_nlu, caplog) -> None:
    nlu = RecordingNlu(model_nlu.for_flow(load_flow("banking")))
    gateway_script = {
        "crm.customer_by_phone": {"ok": {"customer_id": "C1", "name": "Maria"}},
        "crm.block_card": {"ok": {"blocked": True}},
        "crm.verify_caller": {"verify": {"pin": "2580"}},
    }
    flow = load_flow("banking")
    gateway = ScriptedGateway(gateway_script)
    engine = FlowEngine(flow, nlu, gateway, answer_threshold=flow.answer_threshold)
    ctx = CallContext(call_sid="CA-pci", caller="+14155550100")
    caplog.set_level(logging.DEBUG)
    actions = await run(engine.start(ctx))
    actions += await run(engine.handle(ctx, CallerInput("speech", text="my card was stolen")))
    actions += await run(engine.handle(ctx, CallerInput("dtmf", digits="2580#")))  # the PIN first
    listen = [a for a in actions if isinstance(a, Listen)][-1]
    assert listen.pci and listen.mode == "dtmf"
    assert listen.shape is None  # nothing said in a card slot is heard, so speech never ends the entry
    # spoken digits (a session should never send them, but if it does) are refused, not used
    actions += await run(engine.handle(ctx, CallerInput("speech", text="4539 1488 0343 6467")))
    actions += await run(engine.handle(ctx, CallerInput("dtmf", digits=CARD + "#")))
    actions += await run(engine.handle(ctx, CallerInput("dtmf", digits="1")))
    assert "card is now blocked" in said(actions)
    # only the last four reached the backend
    assert gateway.calls[-1] == ("crm.block_card", {"customer_id": "C1", "card_last4": CARD[-4:]})
    spoken = [a.text for a in actions if isinstance(a, Say)]
    turn_texts = [f"{t.text} {t.reply}" for t in ctx.turns]
    for text in spoken + turn_texts + nlu.texts + [caplog.text]:
        assert CARD not in text.replace(" ", "")
        assert CARD[-4:] not in text
    assert all(CARD not in v and CARD[:6] not in v for v in ctx.slots.values())
    assert ctx.slots["card_number_last4"] == CARD[-4:]
    assert "withheld" in ctx.slots["card_number"]
    assert "withheld" in ctx.turns[-2].text


async def test_holding_line_is_spoken_while_the_lookup_runs(model_nlu) -> None:
    release = asyncio.Event()

    class SlowGateway(ScriptedGateway):
        async def call(self, backend: str, operation: str, params: dict[str, Any], *, call_sid: str) -> dict:
            if operation == "order_status":
                await release.wait()
            return await super().call(backend, operation, params, call_sid=call_sid)

    flow = load_flow("ecommerce_delivery")
    gateway = SlowGateway(
        {
            "crm.customer_by_phone": {"ok": IN_TRANSIT},
            "crm.order_status": {"ok": {"item": "espresso machine", "status": "in_transit", "eta": "Friday"}},
        }
    )
    engine = FlowEngine(flow, model_nlu, gateway, answer_threshold=flow.answer_threshold)
    ctx = CallContext(call_sid="CA-hold", caller="+14155550100")
    await run(engine.start(ctx))
    gen = engine.handle(ctx, CallerInput("dtmf", digits="1"))
    first = await asyncio.wait_for(gen.__anext__(), timeout=2)
    assert isinstance(first, Say) and "One moment" in first.text  # spoken before the backend has answered
    release.set()
    rest = [a async for a in gen]
    assert "on its way and should arrive Friday" in said(rest)


async def test_silence_and_hangup_never_resolve(model_nlu) -> None:
    engine = engine_for(
        "banking",
        model_nlu,
        {
            "crm.customer_by_phone": {"ok": {"customer_id": "C1", "name": "M"}},
            "crm.balance": {"ok": {"balance": 10, "currency": "USD"}},
            "crm.verify_caller": {"verify": {"pin": "2580"}},
        },
    )
    ctx = CallContext(call_sid="CA-quiet", caller="+14155550100")
    await run(engine.start(ctx))
    await run(engine.handle(ctx, CallerInput("dtmf", digits="2")))
    reply = await run(engine.handle(ctx, CallerInput("dtmf", digits="2580#")))
    assert "balance is 10 USD" in said(reply)
    await run(engine.handle(ctx, CallerInput("silence")))
    end = await run(engine.handle(ctx, CallerInput("silence")))
    assert any(isinstance(a, Hangup) for a in end)
    assert not ctx.resolved
    assert [t.channel for t in ctx.turns] == ["dtmf", "dtmf"]  # silence is not a caller turn


def test_test_main_prints_a_line_per_test_and_fails_on_a_broken_expectation(tmp_path: Path) -> None:
    good = tmp_path / "tests.yaml"
    good.write_text(
        "flow: banking\ntests:\n"
        "  - name: greets\n    caller: '+1'\n    customer: {customer_id: C1, name: Maria}\n"
        "    steps:\n      - bot_says_contains: again, Maria\n"
        "  - name: wrong expectation\n    caller: '+1'\n    customer: {customer_id: C1, name: Maria}\n"
        "    steps:\n      - bot_says_contains: again, Bob\n"
    )
    out = io.StringIO()
    assert cli.test_main([str(good)], out=out) == 1
    text = out.getvalue()
    assert f"PASS  {good}::greets" in text
    assert f"FAIL  {good}::wrong expectation" in text and "'again, Bob'" in text
    assert "1 passed, 1 failed" in text
