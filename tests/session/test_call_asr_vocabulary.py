"""The recogniser is told what to expect: every utterance is transcribed with the flow's vocabulary, and at the
order-number step with that step's words too (a virtual call; the fake ASR records what it was given)."""

from __future__ import annotations

import pytest

from tests.helpers.virtual_call import JAMES

pytestmark = pytest.mark.looptime


async def test_utterances_carry_the_flow_and_step_vocabulary(make_harness):
    h = await make_harness()
    call = await h.call(JAMES).start()
    await call.wait(1.0)
    await call.say("I want to track my order")
    await call.wait_for(lambda: "order number" in call.heard_text(), what="the order-number question")
    await call.wait_for_bot()
    await call.say("B two zero zero one")
    await call.wait_for_bot()
    await call.finish()

    first, second = h.asr.vocabularies[:2]
    assert first is not None and "Acme Shop" in first and "B2001" not in first
    assert second is not None and "Acme Shop" in second and "B2001" in second
