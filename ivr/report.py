"""Call records turned into honest numbers, and the signal that the intent model needs retraining.

Honest means:
- a call is *contained* only when its outcome is ``resolved`` (a confirmed resolution); a caller who
  went silent, hung up or hit an error counts against containment, never for it;
- rates are over every call that ended (outcome other than ``in_progress``), nothing excluded;
- cost includes the agent time escalations cost, not just the AI's minutes.

Cost model (per ended call):
- AI minutes: from the call's start to its first escalation, or to its end when never escalated;
- agent minutes: real handle time from the desk's call legs: talk time (Twilio's DialCallDuration)
  plus wrap-up (from the call's end to the saved disposition). Time on hold is not agent time.
  A caller who hung up while waiting (escalation ``abandoned``, no agent ever connected) costs no
  agent minutes and counts as **abandoned**, not escalated. Only for an escalation with no leg at
  all (records from before the desk kept legs) is the escalation-to-end time used, and when that
  cannot be measured (no end time, an end before the escalation, or a callback that happens on a
  later call) the fixed estimate ``AGENT_MINUTES_ESTIMATE``.
``cost_per_resolution = cost_total / (resolved + resolved_by_agent)`` (None when nothing was resolved);
``resolved_by_agent`` counts escalated calls whose wrap-up disposition is ``resolved``.

Cut-offs: of the caller turns the endpointer ended (``utterance`` events), those after which the caller spoke
again at once (``turn_resumed``, see ivr/listening.py), by what ended them: silence or the caller's words.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel
from sqlalchemy import select

from flows.pci import mask_card_numbers
from ivr.storage import Storage, agent_legs, calls, escalations, events, turns

log = logging.getLogger("ivr.report")


class CostConfig(BaseModel):
    """`Settings.costs` (``IVR_COSTS__...``): what a minute of each kind of handling costs."""

    ai_cost_per_minute: float = 0.02
    agent_cost_per_minute: float = 0.75


UNCLEAR_TRIGGER = "low_confidence"
RETRAINING_WINDOW = timedelta(days=7)
# Typical handle time of an escalated call when the call record cannot tell us (see module doc).
AGENT_MINUTES_ESTIMATE = 6.0


@dataclass
class Report:
    calls: int  # calls started in the period, in progress included
    ended: int  # calls that ended: the denominator of every rate
    first_response_ms_p50: float | None
    first_response_ms_p95: float | None
    containment_rate: float | None  # resolved / ended
    resolved: int
    escalated: int
    abandoned: int
    silent: int
    errors: int
    escalation_rate: float | None  # escalated / ended
    escalations_by_reason: dict[str, int]  # trigger -> calls, by each call's first escalation
    escalation_rate_by_reason: dict[str, float]  # trigger -> calls / ended
    ai_minutes: float
    agent_minutes: float
    cost_total: float
    cost_per_resolution: float | None
    # one entry per intent guess of low_confidence escalations in the last 7 days, most frequent first
    retraining: list[dict[str, Any]] = field(default_factory=list)
    unclear_escalations_7d: int = 0
    retraining_due: bool = False  # unclear_escalations_7d reached the weekly threshold
    abandoned_in_queue: int = 0  # of `abandoned`: escalated callers who hung up before an agent answered
    resolved_by_agent: int = 0  # escalated calls an agent wrapped up as resolved
    caller_turns: int = 0  # turns the endpointer ended, in the period's calls
    cut_off_turns: dict[str, int] = field(default_factory=dict)  # by what ended them -> turns the caller went on
    cut_off_rate: float | None = None  # all cut-off turns / caller_turns

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _aware(value: datetime | None) -> datetime | None:
    """As UTC. SQLite hands back naive datetimes for timezone-aware columns (and compares them as text),
    and everything we store is UTC, so naive means UTC and aware values are converted before queries."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def _minutes(a: datetime, b: datetime) -> float:
    return max((b - a).total_seconds(), 0.0) / 60.0


def _first_escalations(storage: Storage, sids: set[str]) -> dict[str, dict[str, Any]]:
    """call_sid -> its first escalation row (trigger, at, status)."""
    query = select(escalations.c.call_sid, escalations.c.trigger, escalations.c.at, escalations.c.status).order_by(
        escalations.c.at, escalations.c.id
    )
    first: dict[str, dict[str, Any]] = {}
    with storage.engine.connect() as conn:
        for row in conn.execute(query).mappings():
            if row["call_sid"] in sids and row["call_sid"] not in first:
                first[row["call_sid"]] = {**row, "at": _aware(row["at"])}
    return first


def _agent_handling(storage: Storage) -> dict[str, dict[str, Any]]:
    """call_sid -> its agent legs summed: handle minutes (talk + wrap-up), answered, resolved by the agent."""
    out: dict[str, dict[str, Any]] = {}
    with storage.engine.connect() as conn:
        for leg in conn.execute(select(agent_legs)).mappings():
            entry = out.setdefault(leg["call_sid"], {"minutes": 0.0, "answered": False, "resolved": False})
            entry["minutes"] += (leg["talk_s"] or 0.0) / 60.0
            ended, wrapped = _aware(leg["ended_at"]), _aware(leg["wrapped_at"])
            if ended is not None and wrapped is not None:
                entry["minutes"] += _minutes(ended, wrapped)
            entry["answered"] = entry["answered"] or leg["answered_at"] is not None or leg["status"] == "completed"
            entry["resolved"] = entry["resolved"] or leg["disposition"] == "resolved"
    return out


def _abandoned_in_queue(storage: Storage) -> set[str]:
    with storage.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(escalations.c.call_sid).where(escalations.c.status == "abandoned"))}


def _unclear_escalations(storage: Storage, since: datetime) -> list[dict[str, Any]]:
    """low_confidence escalations since `since`, the first per call, with their handoff payloads."""
    query = (
        select(escalations.c.call_sid, escalations.c.at, escalations.c.payload)
        .where(escalations.c.trigger == UNCLEAR_TRIGGER, escalations.c.at >= _aware(since))
        .order_by(escalations.c.at, escalations.c.id)
    )
    seen: dict[str, dict[str, Any]] = {}
    with storage.engine.connect() as conn:
        for row in conn.execute(query).mappings():
            seen.setdefault(row["call_sid"], {**row, "at": _aware(row["at"])})
    return list(seen.values())


def _turn_ends(storage: Storage, since: datetime | None) -> tuple[int, Counter[str]]:
    """Caller turns ended in calls started at or after `since`, and those the caller went on after, by cause."""
    query = (
        select(events.c.kind, events.c.data)
        .select_from(events.join(calls, events.c.call_sid == calls.c.call_sid))
        .where(events.c.kind.in_(("utterance", "turn_resumed")))
    )
    if since is not None:
        query = query.where(calls.c.started_at >= since)
    ended, resumed = 0, Counter[str]()
    with storage.engine.connect() as conn:
        for row in conn.execute(query).mappings():
            if row["kind"] == "utterance":
                ended += 1
            else:
                resumed[str((row["data"] or {}).get("by", "unknown"))] += 1
    return ended, resumed


def build_report(
    storage: Storage,
    costs: CostConfig,
    *,
    since: datetime | None = None,
    unclear_intent_threshold: int = 100,
    now: datetime | None = None,
) -> Report:
    """Numbers for calls started at or after `since` (all calls when None).

    The retraining signal always looks at the 7 days before `now`, whatever `since` says.
    """
    now = _aware(now) or datetime.now(UTC)
    records = storage.list_calls(since=_aware(since))
    ended = [c for c in records if c["outcome"] != "in_progress"]
    first = _first_escalations(storage, {c["call_sid"] for c in records})
    handling = _agent_handling(storage)
    gone = _abandoned_in_queue(storage)

    def outcome(c: Any) -> str:
        sid = c["call_sid"]
        if c["outcome"] == "escalated" and sid in gone and not handling.get(sid, {}).get("answered"):
            return "abandoned"  # hung up waiting for an agent: the desk never handled it
        return str(c["outcome"])

    outcomes = Counter(outcome(c) for c in ended)
    abandoned_in_queue = sum(1 for c in ended if outcome(c) == "abandoned" and c["outcome"] == "escalated")
    resolved_by_agent = sum(1 for c in ended if handling.get(c["call_sid"], {}).get("resolved"))

    by_reason = Counter(first[c["call_sid"]]["trigger"] for c in ended if c["call_sid"] in first)
    ai_minutes = agent_minutes = 0.0
    for c in ended:
        start = datetime.fromisoformat(c["started_at"])
        ended_at = c.get("ended_at")
        end = datetime.fromisoformat(ended_at) if ended_at else None
        esc = first.get(c["call_sid"])
        if esc is None:
            ai_minutes += _minutes(start, end) if end else 0.0
            continue
        ai_minutes += _minutes(start, esc["at"])
        legs = handling.get(c["call_sid"])
        if legs is not None:
            agent_minutes += legs["minutes"]
        elif c["call_sid"] in gone:
            pass  # hung up on hold: no agent time
        elif end is not None and end > esc["at"] and esc["status"] != "callback":
            agent_minutes += _minutes(esc["at"], end)
        else:
            agent_minutes += AGENT_MINUTES_ESTIMATE
    cost_total = ai_minutes * costs.ai_cost_per_minute + agent_minutes * costs.agent_cost_per_minute

    first_response = [ms for c in records if (ms := c.get("first_response_ms")) is not None]
    p50, p95 = (
        (float(np.percentile(first_response, 50)), float(np.percentile(first_response, 95)))
        if first_response
        else (None, None)
    )

    unclear = _unclear_escalations(storage, now - RETRAINING_WINDOW)
    guesses = Counter((e["payload"] or {}).get("intent_guess") for e in unclear)
    retraining = [
        {
            "intent_guess": g,
            "count": n,
            "threshold": unclear_intent_threshold,
            "exceeded": n >= unclear_intent_threshold,
        }
        for g, n in sorted(guesses.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]
    resolved = outcomes["resolved"]
    resolutions = resolved + resolved_by_agent
    caller_turns, cut_off = _turn_ends(storage, _aware(since))
    return Report(
        calls=len(records),
        ended=len(ended),
        first_response_ms_p50=p50,
        first_response_ms_p95=p95,
        containment_rate=_rate(resolved, len(ended)),
        resolved=resolved,
        escalated=outcomes["escalated"],
        abandoned=outcomes["abandoned"],
        silent=outcomes["silent"],
        errors=outcomes["error"],
        # Every call handed to the desk, including those who hung up before an agent answered.
        escalation_rate=_rate(outcomes["escalated"] + abandoned_in_queue, len(ended)),
        escalations_by_reason=dict(by_reason),
        escalation_rate_by_reason={t: n / len(ended) for t, n in by_reason.items()},
        ai_minutes=ai_minutes,
        agent_minutes=agent_minutes,
        cost_total=cost_total,
        cost_per_resolution=cost_total / resolutions if resolutions else None,
        retraining=retraining,
        unclear_escalations_7d=len(unclear),
        retraining_due=len(unclear) >= unclear_intent_threshold,
        abandoned_in_queue=abandoned_in_queue,
        resolved_by_agent=resolved_by_agent,
        caller_turns=caller_turns,
        cut_off_turns=dict(cut_off),
        cut_off_rate=_rate(sum(cut_off.values()), caller_turns),
    )


def export_retraining_dataset(
    storage: Storage,
    path: Path,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
    actor: str = "report",
) -> int:
    """Writes one JSON line per call escalated for an unclear intent (trigger low_confidence) since
    `since` (default: the last 7 days): the intent guess and the caller's turns, card numbers masked.

    Returns the number of calls written. The file is replaced atomically.
    """
    now = _aware(now) or datetime.now(UTC)
    since = _aware(since) or now - RETRAINING_WINDOW
    unclear = _unclear_escalations(storage, since)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with storage.engine.connect() as conn, open(tmp, "w", encoding="utf-8") as fh:
        for esc in unclear:
            call = conn.execute(select(calls.c.region).where(calls.c.call_sid == esc["call_sid"])).first()
            rows = conn.execute(
                select(turns.c.idx, turns.c.channel, turns.c.text, turns.c.intent, turns.c.confidence)
                .where(turns.c.call_sid == esc["call_sid"])
                .order_by(turns.c.idx, turns.c.id)
            ).mappings()
            payload = esc["payload"] or {}
            record = {
                "call_sid": esc["call_sid"],
                "escalated_at": esc["at"].isoformat(),
                "region": call[0] if call else None,
                "intent_guess": payload.get("intent_guess"),
                "confidence": payload.get("confidence"),
                "turns": [{**r, "text": mask_card_numbers(r["text"])} for r in rows],
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    # Tracked and audited: an erasure or a purge takes its calls out of this file too.
    storage.record_export(
        kind="retraining", path=str(path.resolve()), call_sids=[e["call_sid"] for e in unclear], actor=actor
    )
    log.info("retraining export: %d calls to %s", len(unclear), path)
    return len(unclear)


def register_report_gauges(report: Report, registry: CollectorRegistry) -> None:
    """Publishes the report as gauges (prefix ivr_report_) into `registry`."""

    def gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> None:
        g = gauges.get(name)
        if g is None:
            g = gauges[name] = Gauge(name, doc, sorted(labels or {}), registry=registry)
        if value is not None:
            (g.labels(**labels) if labels else g).set(value)

    gauges: dict[str, Gauge] = {}
    gauge("ivr_report_calls", "Calls started in the report period", report.calls)
    gauge("ivr_report_calls_ended", "Calls ended in the report period", report.ended)
    for outcome in ("resolved", "escalated", "abandoned", "silent", "errors"):
        gauge("ivr_report_outcome_calls", "Ended calls by outcome", getattr(report, outcome), {"outcome": outcome})
    gauge("ivr_report_containment_ratio", "Confirmed resolutions / ended calls", report.containment_rate)
    gauge("ivr_report_escalation_ratio", "Escalated calls / ended calls", report.escalation_rate)
    for trigger, rate in sorted(report.escalation_rate_by_reason.items()):
        gauge(
            "ivr_report_escalation_by_trigger_ratio",
            "Escalations / ended calls, by trigger",
            rate,
            {"trigger": trigger},
        )
    for q, v in (("0.5", report.first_response_ms_p50), ("0.95", report.first_response_ms_p95)):
        gauge("ivr_report_first_response_ms", "First response time quantiles (ms)", v, {"quantile": q})
    gauge(
        "ivr_report_cut_off_ratio",
        "Caller turns after which the caller went straight on (cut off) / caller turns",
        report.cut_off_rate,
    )
    gauge("ivr_report_cost_total", "AI plus agent cost of the period's ended calls", report.cost_total)
    gauge("ivr_report_cost_per_resolution", "Total cost / confirmed resolutions", report.cost_per_resolution)
    gauge(
        "ivr_report_unclear_escalations_7d",
        "low_confidence escalations in the last 7 days",
        report.unclear_escalations_7d,
    )
    gauge(
        "ivr_report_retraining_due",
        "1 when unclear-intent escalations reached the weekly threshold",
        float(report.retraining_due),
    )


def report_prometheus_lines(report: Report) -> str:
    """The report in Prometheus text exposition format."""
    registry = CollectorRegistry()
    register_report_gauges(report, registry)
    return generate_latest(registry).decode("utf-8")
