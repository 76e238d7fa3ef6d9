"""`ivr nlu --flow NAME`: how a flow's intent classifier reads each line of stdin, one JSON object per line.

Flow authors try their intents with it (type a request, see the intent, its confidence and whether the bot would
act on it or ask), and `make bench` pipes the public sets through it. Card numbers are masked before the text
reaches the classifier or the output, as on a call.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from pydantic import BaseModel

from flows.cli import load_flow
from flows.intent_library import IntentLibraryError
from flows.loader import FlowValidationError
from flows.pci import mask_card_numbers
from models.intent import IntentModels, decide


class Alternative(BaseModel):
    intent: str
    confidence: float


class NluLine(BaseModel):
    """One output line."""

    text: str
    intent: str
    confidence: float
    decision: str  # "answer" at or above the flow's threshold, else "clarify"
    threshold: float
    alternatives: list[Alternative]


def nlu_main(
    flow_name: str,
    region: str | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    models: IntentModels | None = None,
) -> int:
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    try:
        flow = load_flow(flow_name)
        spec = flow.intent_set().spec()
    except (FileNotFoundError, FlowValidationError, IntentLibraryError) as exc:
        print(f"ivr nlu: {exc}", file=sys.stderr)
        return 2
    normalise = None
    if region:
        from models.regions import load_regions

        table = load_regions()
        if region not in table:
            print(f"ivr nlu: unknown region {region!r}", file=sys.stderr)
            return 2
        normalise = table[region].normalise
    classifier = (models or IntentModels()).classifier(spec)
    threshold = flow.answer_threshold
    for line in stdin:
        text = mask_card_numbers(line.rstrip("\r\n"))
        result = classifier.classify(normalise(text) if normalise else text)
        row = NluLine(
            text=text,
            intent=result.intent,
            confidence=result.confidence,
            decision=decide(result, threshold),
            threshold=threshold,
            alternatives=[Alternative(intent=i, confidence=c) for i, c in result.alternatives],
        )
        out.write(json.dumps(row.model_dump()) + "\n")
        out.flush()
    return 0
