"""Intents as data: intent libraries in ``flows/intents/*.yaml`` and a flow's own ``intents:`` block.

A library file::

    version: 1
    intents:
      track_order:
        label: tracking an order          # spoken in "is it about X, or Y?"
        description: Where an order is and when it will arrive.
        examples: [where is my order, ...]
    out_of_scope: [what's the weather like, ...]   # requests that are none of the intents

A flow lists the libraries it imports under ``intent_libraries:`` and may define or extend intents under
``intents:`` (same shape as a library's). Adding an intent is a YAML change: the flow's classifier is rebuilt
from the new spec (``IntentSpec.sha256`` changes) and the intent can be routed at once.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.intent import OUT_OF_SCOPE, IntentDefinition, IntentSpec

LIBRARY_DIR = Path(__file__).resolve().parent / "intents"
_NAME = r"^[a-z][a-z0-9_]*$"


class IntentDef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field("", description="how the bot names this intent when it asks which one the caller means")
    description: str = ""
    examples: tuple[str, ...] = ()
    extends: bool = Field(False, description="add these examples to an imported intent of the same name")

    @field_validator("examples", mode="before")
    @classmethod
    def _texts(cls, value: object) -> object:
        if isinstance(value, list):
            bad = [v for v in value if not isinstance(v, str) or not v.strip()]
            if bad:
                raise ValueError(f"examples must be text; got {bad!r} (quote yes/no/on/off)")
        return value


class IntentLibrary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int | str
    intents: dict[str, IntentDef] = Field(default_factory=dict)
    out_of_scope: tuple[str, ...] = ()


class IntentLibraryError(ValueError):
    pass


@functools.lru_cache(maxsize=64)
def _read_library(path: str, sha256: str) -> IntentLibrary:
    # Keyed by content hash: an edited library is read again, an unchanged one once per process.
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    try:
        return IntentLibrary.model_validate(raw)
    except ValidationError as exc:
        raise IntentLibraryError(f"{path}: {exc}") from exc


def library_names() -> list[str]:
    return sorted(p.stem for p in LIBRARY_DIR.glob("*.yaml"))


def load_library(name: str, folder: Path = LIBRARY_DIR) -> IntentLibrary:
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise IntentLibraryError(f"unknown intent library {name!r} (in {folder}: {', '.join(library_names())})")
    return _read_library(str(path), hashlib.sha256(path.read_bytes()).hexdigest())


class FlowIntents:
    """A flow's resolved intents (imported libraries, then its own block) and its out-of-scope phrases."""

    def __init__(self, libraries: list[str], own: dict[str, IntentDef], folder: Path = LIBRARY_DIR) -> None:
        self.intents: dict[str, IntentDef] = {}
        out_of_scope: list[str] = []
        for name in libraries:
            lib = load_library(name, folder)
            for intent, definition in lib.intents.items():
                if intent in self.intents:
                    raise IntentLibraryError(f"intent {intent!r} is defined by two imported libraries")
                self.intents[intent] = definition
            out_of_scope += lib.out_of_scope
        for intent, definition in own.items():
            if not _valid_name(intent):
                raise IntentLibraryError(f"intent name {intent!r} must be lower_snake_case and not {OUT_OF_SCOPE!r}")
            base = self.intents.get(intent)
            if definition.extends:
                if base is None:
                    raise IntentLibraryError(f"intent {intent!r} extends nothing: no imported library defines it")
                definition = IntentDef(
                    label=definition.label or base.label,
                    description=definition.description or base.description,
                    examples=base.examples + definition.examples,
                )
            elif base is not None:
                raise IntentLibraryError(f"intent {intent!r} is already imported; set 'extends: true' to add examples")
            if len(definition.examples) < 2:
                raise IntentLibraryError(f"intent {intent!r} needs at least 2 example phrases")
            self.intents[intent] = definition
        self.out_of_scope = tuple(out_of_scope)

    @property
    def names(self) -> list[str]:
        return list(self.intents)

    def spec(self) -> IntentSpec:
        if not self.intents:
            raise IntentLibraryError("this flow declares no intents")
        if not self.out_of_scope:
            raise IntentLibraryError(
                "a flow with intents needs out-of-scope phrases (import the 'out_of_scope' library): without them "
                "every request looks like one of the intents"
            )
        return IntentSpec(
            tuple(IntentDefinition(n, d.examples, d.description) for n, d in self.intents.items()),
            self.out_of_scope,
        )

    def label(self, intent: str) -> str:
        definition = self.intents.get(intent)
        return (definition.label if definition else "") or intent.replace("_", " ")


def _valid_name(name: str) -> bool:
    import re

    return bool(re.match(_NAME, name)) and name != OUT_OF_SCOPE
