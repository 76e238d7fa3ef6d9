"""Intents are data: an intent a business adds in its flow's YAML is routed at once, with no code change, by the
real classifier; `ivr flows validate` catches an intent that is routed but never declared."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from flows import cli
from flows.actions import Say
from flows.context import CallContext
from flows.engine import CallerInput, FlowEngine
from flows.loader import FlowValidationError, load_flow_file
from flows.nlu_cli import nlu_main
from flows.testing import ModelNlu, ScriptedGateway

SHOP = """
name: furniture_shop
version: 1
industry: ecommerce
start: ask
queue: ecommerce
intent_libraries: [ecommerce, common, out_of_scope, banking_other]
intents:
  assembly_booking:
    label: booking furniture assembly
    description: The caller wants a fitter to come and put together furniture they bought.
    examples:
      - can someone come and assemble my wardrobe
      - i need help putting my new bed together
      - book an assembly appointment
      - do you offer a furniture assembly service
      - i'd like a technician to build the sofa i ordered
      - can i schedule a fitter to put up my shelves
      - send someone to put the table together
      - i want my new cabinet assembled at home
      - who can build the furniture i bought from you
      - book a fitter for my kitchen units
steps:
  ask:
    kind: intent
    text: "How can I help?"
    routes:
      assembly_booking: assembly
      track_order: tracking
  assembly:
    kind: end
    text: "Our assembly team will call you to book a visit."
  tracking:
    kind: end
    text: "Let me look up your order."
"""


@pytest.fixture
def shop_file(tmp_path: Path) -> Path:
    path = tmp_path / "furniture_shop.yaml"
    path.write_text(SHOP, encoding="utf-8")
    return path


async def _reply(engine: FlowEngine, text: str) -> str:
    ctx = CallContext(call_sid="CA-shop", caller="+14155550100")
    [a async for a in engine.start(ctx)]
    actions = [a async for a in engine.handle(ctx, CallerInput("speech", text=text))]
    return " ".join(a.text for a in actions if isinstance(a, Say))


async def test_an_intent_added_in_yaml_is_routed_without_code_changes(shop_file: Path, model_nlu: ModelNlu) -> None:
    flow = load_flow_file(shop_file)
    engine = FlowEngine(flow, model_nlu.for_flow(flow), ScriptedGateway({}), answer_threshold=flow.answer_threshold)
    # Wording that is in none of the examples: matched on meaning.
    assert "assembly team" in await _reply(engine, "could you send somebody to put my new dining table together")
    assert "look up your order" in await _reply(engine, "can you track my parcel for me")


def test_ivr_nlu_reads_the_new_intent_from_the_flow_file(shop_file: Path, model_nlu: ModelNlu) -> None:
    out = io.StringIO()
    lines = "I want someone to assemble the wardrobe I bought\nwhat's the weather like in Paris\n"
    assert nlu_main(str(shop_file), stdin=io.StringIO(lines), out=out, models=model_nlu.models) == 0
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["intent"] == "assembly_booking" and first["decision"] == "answer"
    assert first["confidence"] >= first["threshold"] == 0.85
    assert [a["intent"] for a in first["alternatives"]] and "assembly_booking" not in first["alternatives"]
    assert second["decision"] == "clarify"


def test_routing_an_undeclared_intent_is_a_validation_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = SHOP.replace("track_order: tracking", "warranty_claim: tracking")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlowValidationError) as err:
        load_flow_file(path)
    (issue,) = err.value.issues
    assert "unknown intent 'warranty_claim'" in issue.message and "assembly_booking" in issue.message
    assert issue.line == text.splitlines().index("      warranty_claim: tracking") + 1
    out = io.StringIO()
    assert cli.validate_main([str(path)], out=out) == 1
    assert "warranty_claim" in out.getvalue()


def test_a_flow_without_out_of_scope_phrases_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "no_oos.yaml"
    path.write_text(SHOP.replace(", out_of_scope, banking_other", ""), encoding="utf-8")
    with pytest.raises(FlowValidationError, match="out-of-scope"):
        load_flow_file(path)
