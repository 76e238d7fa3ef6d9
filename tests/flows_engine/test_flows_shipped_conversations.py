"""Every conversation test shipped with the flows, one pytest case each."""

from __future__ import annotations

import pytest

from flows.cli import shipped_flow_paths
from flows.testing import conversation_tests_path, load_test_file, run_test

CASES = []
for flow_path in shipped_flow_paths():
    test_file = conversation_tests_path(flow_path)
    _, tests = load_test_file(test_file)
    CASES += [pytest.param(test_file, t.name, id=f"{flow_path.stem}::{t.name}") for t in tests]


def test_every_shipped_flow_has_conversation_tests() -> None:
    names = {p.stem for p in shipped_flow_paths()}
    assert names == {"ecommerce_delivery", "telecom_billing", "banking"}
    for flow_path in shipped_flow_paths():
        assert conversation_tests_path(flow_path).exists(), flow_path


@pytest.mark.parametrize(("test_file", "name"), CASES)
async def test_shipped_conversation(test_file, name, model_nlu) -> None:
    flow, tests = load_test_file(test_file)
    test = next(t for t in tests if t.name == name)
    result = await run_test(flow, test, model_nlu)
    assert result.passed, result.failure + "\n" + "\n".join(result.transcript)
