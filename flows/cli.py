"""`ivr flows validate` and `ivr flows test`: entry points the `ivr` CLI wires in.

Both take files or folders; with no paths they use the shipped flows and their conversation tests.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import TextIO

from flows.loader import FlowValidationError, load_flow_file, load_yaml
from flows.schema import Flow
from flows.testing import SHIPPED_DIR, conversation_tests_path, run_test_file


def shipped_flow_paths() -> list[Path]:
    return sorted(SHIPPED_DIR.glob("*.yaml"))


def load_flow(name_or_path: str | Path) -> Flow:
    """A flow by path, or by the name of a shipped flow ("banking"). Raises FileNotFoundError or
    FlowValidationError."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"flow file {path} not found")
        return load_flow_file(path)
    shipped = SHIPPED_DIR / f"{name_or_path}.yaml"
    if not shipped.exists():
        names = ", ".join(p.stem for p in shipped_flow_paths())
        raise FileNotFoundError(f"no flow named {name_or_path!r} (shipped flows: {names})")
    return load_flow_file(shipped)


def _yaml_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


def validate_main(paths: list[str], out: TextIO | None = None) -> int:
    """Validate flow files (folders: every *.yaml in them). Prints each problem as file:line: field: message."""
    out = out or sys.stdout
    files = _yaml_files(paths) if paths else shipped_flow_paths()
    if not files:
        print("no flow files given or found", file=out)
        return 2
    bad = 0
    for path in files:
        try:
            flow = load_flow_file(path)
        except FileNotFoundError:
            print(f"{path}: file not found", file=out)
            bad += 1
        except FlowValidationError as err:
            for issue in err.issues:
                print(str(issue), file=out)
            bad += 1
        else:
            summary = f"flow {flow.name} v{flow.version} ({flow.industry}, {len(flow.steps)} steps)"
            print(f"ok    {path}: {summary}", file=out)
    print(f"{len(files) - bad} valid, {bad} invalid", file=out)
    return 1 if bad else 0


def _test_files(paths: list[str]) -> list[Path]:
    if not paths:
        return [t for t in map(conversation_tests_path, shipped_flow_paths()) if t.exists()]
    files: list[Path] = []
    for path in _yaml_files(paths):
        # A flow file stands for its conversation tests in tests/<same name>.
        try:
            data = load_yaml(path) if path.exists() else None
        except FlowValidationError:
            data = None
        if isinstance(data, dict) and "steps" in data and "tests" not in data:
            files.append(conversation_tests_path(path))
        else:
            files.append(path)
    return files


def test_main(paths: list[str], out: TextIO | None = None, verbose: bool = False) -> int:
    """Run conversation tests; one PASS/FAIL line each, then 'N passed, M failed'. Exit code 0 only if all pass."""
    out = out or sys.stdout
    files = _test_files(paths)
    passed = failed = 0
    started = time.perf_counter()
    for path in files:
        if not path.exists():
            print(f"FAIL  {path}: test file not found", file=out)
            failed += 1
            continue
        try:
            results = asyncio.run(run_test_file(path))
        except FlowValidationError as err:
            for issue in err.issues:
                print(f"FAIL  {issue}", file=out)
            failed += 1
            continue
        for r in results:
            if r.passed:
                passed += 1
                print(f"PASS  {r.label}", file=out)
            else:
                failed += 1
                print(f"FAIL  {r.label}\n      {r.failure}", file=out)
            if verbose or not r.passed:
                for line in r.transcript[-12:] if not verbose else r.transcript:
                    print(f"        {line}", file=out)
    elapsed = time.perf_counter() - started
    print(f"{passed} passed, {failed} failed in {elapsed:.2f}s", file=out)
    return 0 if failed == 0 and passed > 0 else 1
