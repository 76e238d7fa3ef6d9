"""Reads flow files, keeping line numbers so every error names file, line and field.

`flows/shipped/banking.yaml:42: steps.ask_card.kind: unknown step kind 'colect' (expected one of: ...)`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.schema import STEP_KINDS, Flow, Loc, check_flow


@dataclass(frozen=True)
class FlowIssue:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class FlowValidationError(ValueError):
    """One or more problems in a flow file; `issues` holds each with its line."""

    def __init__(self, issues: list[FlowIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers the line (1-based) of itself and of each key."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list[Any]):
    line: int = 0
    item_lines: list[int]


class LineLoader(yaml.SafeLoader):
    """SafeLoader that records where each mapping, key and list item starts."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:
        self.flatten_mapping(node)
        out = LineDict()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark
                ) from None
            if key in out:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            out[key] = self.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:
        out = LineList(self.construct_object(child, deep=True) for child in node.value)
        out.line = node.start_mark.line + 1
        out.item_lines = [child.start_mark.line + 1 for child in node.value]
        return out


LineLoader.add_constructor("tag:yaml.org,2002:map", LineLoader.construct_mapping)
LineLoader.add_constructor("tag:yaml.org,2002:seq", LineLoader.construct_sequence)


def load_yaml(path: str | Path) -> Any:
    """Parse YAML keeping line numbers; a syntax error becomes a FlowValidationError naming the line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise FlowValidationError([FlowIssue(str(path), line, "", f"YAML error: {exc.problem or exc}")]) from None


def line_of(data: Any, loc: Loc) -> tuple[int, tuple[str | int, ...]]:
    """Line for a pydantic/check location, and the location cleaned of discriminator tags."""
    line = getattr(data, "line", 1) or 1
    cur = data
    clean: list[str | int] = []
    for part in loc:
        if isinstance(cur, dict):
            if part in cur:
                line = cur.key_lines.get(part, line) if isinstance(cur, LineDict) else line
                clean.append(part)
                cur = cur[part]
                continue
            if cur.get("kind") == part:  # pydantic puts the union tag in the path: skip it
                continue
            clean.append(part)
            cur = None
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            if isinstance(cur, LineList):
                line = cur.item_lines[part]
            clean.append(part)
            cur = cur[part]
        else:
            clean.append(part)
            cur = None
    return line, tuple(clean)


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")


def _pydantic_issues(path: str, data: Any, err: ValidationError) -> list[FlowIssue]:
    issues: list[FlowIssue] = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        etype = e["type"]
        msg = e["msg"]
        if etype == "union_tag_invalid":
            tag = (e.get("ctx") or {}).get("tag")
            loc = loc + ("kind",)
            msg = f"unknown step kind {tag!r} (expected one of: {', '.join(STEP_KINDS)})"
        elif etype == "union_tag_not_found":
            loc = loc + ("kind",)
            msg = f"missing 'kind' (one of: {', '.join(STEP_KINDS)})"
        elif etype == "extra_forbidden":
            msg = "unknown field"
        elif etype == "literal_error":
            msg = f"{msg}, got {e.get('input')!r}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        line, clean = line_of(data, loc)
        issues.append(FlowIssue(path, line, _field(clean), msg))
    return issues


def parse_flow(data: Any, path: str = "<flow>") -> Flow:
    if not isinstance(data, dict):
        raise FlowValidationError([FlowIssue(path, getattr(data, "line", 1) or 1, "", "a flow must be a mapping")])
    try:
        flow = Flow.model_validate(data)
    except ValidationError as err:
        raise FlowValidationError(_pydantic_issues(path, data, err)) from None
    issues = []
    for loc, message in check_flow(flow):
        line, clean = line_of(data, loc)
        issues.append(FlowIssue(path, line, _field(clean), message))
    if issues:
        raise FlowValidationError(sorted(issues, key=lambda i: i.line))
    return flow


def load_flow_file(path: str | Path) -> Flow:
    """Load and fully validate one flow file. Raises FlowValidationError (every problem, with lines)."""
    return parse_flow(load_yaml(path), str(path))
