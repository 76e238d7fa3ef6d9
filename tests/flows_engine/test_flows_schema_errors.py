"""A broken flow is refused with file:line: field: message, before any call reaches it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from flows.cli import load_flow, shipped_flow_paths, validate_main
from flows.loader import FlowValidationError, load_flow_file
from flows.schema import Condition, ExpressionError

GOOD = """\
name: tiny
version: 1
industry: finance
start: ask_card
prompts:
  ask: "Type your card number."
  bye: "Goodbye."
steps:
  ask_card:
    kind: collect
    slot: card
    prompt: ask
    mode: dtmf
    pci: true
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


def test_the_good_flow_loads(tmp_path: Path) -> None:
    flow = load_flow_file(write(tmp_path, GOOD))
    assert flow.answer_threshold == 0.92
    assert set(flow.steps) == {"ask_card", "done"}


def test_unknown_step_kind_names_file_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("kind: collect", "kind: colect")
    path = write(tmp_path, text)
    msg = errors(path)
    line = line_of(text, "kind: colect")
    assert msg[0].startswith(f"{path}:{line}: steps.ask_card.kind: unknown step kind 'colect'")


def test_wrong_field_inside_a_step_names_its_line(tmp_path: Path) -> None:
    text = GOOD.replace("    pci: true\n", "    pci: true\n    max_digit: 16\n")
    path = write(tmp_path, text)
    assert errors(path) == [f"{path}:{line_of(text, 'max_digit:')}: steps.ask_card.max_digit: unknown field"]


def test_unknown_next_target(tmp_path: Path) -> None:
    text = GOOD.replace("next: done", "next: dnoe")
    path = write(tmp_path, text)
    msg = errors(path)
    assert f"{path}:{line_of(text, 'next: dnoe')}: steps.ask_card.next: unknown step 'dnoe' (next target)" in msg


def test_unreachable_step(tmp_path: Path) -> None:
    text = GOOD + "  orphan:\n    kind: end\n    prompt: bye\n"
    path = write(tmp_path, text)
    assert errors(path) == [
        f"{path}:{line_of(text, 'orphan:')}: steps.orphan: step 'orphan' is unreachable from start 'ask_card'"
    ]


def test_missing_prompt(tmp_path: Path) -> None:
    text = GOOD.replace("prompt: bye", "prompt: farewell")
    path = write(tmp_path, text)
    assert errors(path) == [
        f"{path}:{line_of(text, 'prompt: farewell')}: steps.done.prompt: missing prompt "
        "'farewell' (not defined under prompts:)"
    ]


def test_pci_step_must_be_keypad_only(tmp_path: Path) -> None:
    text = GOOD.replace("mode: dtmf", "mode: both")
    path = write(tmp_path, text)
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:{line_of(text, 'ask_card:')}: steps.ask_card: ")
    assert "keypad only" in msg


def test_card_slot_can_never_be_spoken(tmp_path: Path) -> None:
    text = GOOD.replace('bye: "Goodbye."', 'bye: "Goodbye, card {card}."')
    path = write(tmp_path, text)
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:{line_of(text, 'bye:')}: prompts.bye: ")
    assert "card data" in msg


def test_bad_condition_and_unknown_name(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    next: done\n",
        "    next: check\n  check:\n    kind: branch\n    cases:\n      - when: 'lookup.status =='\n"
        "        next: done\n      - when: custmer.known\n        next: done\n    otherwise: done\n",
    )
    path = write(tmp_path, text)
    msg = errors(path)
    assert any(m.startswith(f"{path}:{line_of(text, 'lookup.status')}: steps.check.cases[0].when: ") for m in msg)
    assert any(
        m.startswith(f"{path}:{line_of(text, 'custmer')}: steps.check.cases[1].when: unknown name 'custmer'")
        for m in msg
    )


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    text = GOOD.replace("  ask_card:\n", "  ask_card:\n   - broken: [\n")
    path = write(tmp_path, text)
    (msg,) = errors(path)
    assert msg.startswith(f"{path}:") and "YAML error" in msg


def test_conditions_cannot_run_code() -> None:
    with pytest.raises(ExpressionError):
        Condition("__import__('os').system('true')")
    # a dunder is only a path: it reads nothing from Python objects
    assert Condition("customer.__class__").evaluate({"customer": object()}) is False
    assert Condition('lookup.status == "in_transit" and not customer.vip').evaluate(
        {"lookup": {"status": "in_transit"}, "customer": {"vip": False}}
    )


def test_validate_main_reports_and_sets_exit_code(tmp_path: Path) -> None:
    out = io.StringIO()
    assert validate_main([], out=out) == 0
    assert "3 valid, 0 invalid" in out.getvalue()
    bad = write(tmp_path, GOOD.replace("kind: collect", "kind: colect"))
    out = io.StringIO()
    assert validate_main([str(bad)], out=out) == 1
    assert f"{bad}:{line_of(GOOD, 'kind: collect')}: steps.ask_card.kind" in out.getvalue()


def test_load_flow_by_name_or_path() -> None:
    assert load_flow("banking").industry == "finance"
    assert load_flow(str(shipped_flow_paths()[0])).name == shipped_flow_paths()[0].stem
    with pytest.raises(FileNotFoundError, match="banking"):
        load_flow("no_such_flow")
