"""Regions: language, compliance tags and the slang normaliser that runs before intent detection.

Configuration lives in ``models/data/regions.yaml``. ``Region.normalise`` rewrites local wording into the
vocabulary the intent model was trained on ("recharge my cell" -> "top up my mobile"): case-insensitive,
on word boundaries, longest phrase first, in a single pass so a replacement is never rewritten again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_REGIONS_PATH = Path(__file__).resolve().parent / "data" / "regions.yaml"


class UnknownRegionError(KeyError):
    """Raised for a region name that is not configured; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown region {self.name!r}; known regions: {', '.join(self.known) or '(none)'}"


@dataclass
class Region:
    name: str
    language: str  # BCP 47 tag of the language callers are answered in, e.g. "en-US", "de-DE"
    compliance_tags: list[str]
    slang: dict[str, str]
    secondary_languages: list[str] = field(default_factory=list)
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    _lookup: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._lookup = {}
        for phrase, replacement in self.slang.items():
            key = _squash(phrase).casefold()
            if not key:
                raise ValueError(f"region {self.name!r}: empty slang phrase")
            self._lookup[key] = replacement
        if not self._lookup:
            self._pattern = None
            return
        # Longest first so "me parcel" wins over "parcel"; whitespace inside a phrase matches any run of it.
        alternatives = sorted(self._lookup, key=len, reverse=True)
        body = "|".join(r"\s+".join(re.escape(w) for w in phrase.split(" ")) for phrase in alternatives)
        self._pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)

    def normalise(self, text: str) -> str:
        """Replace regional words and phrases with the wording the intent model knows."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        text = text.replace("\u2019", "'")
        if self._pattern is None:
            return _squash(text)
        return _squash(self._pattern.sub(lambda m: self._lookup.get(_squash(m.group(0)).casefold(), m.group(0)), text))


class RegionTable(dict[str, Region]):
    """Mapping of region name to Region whose lookups fail with a clear error naming the known regions."""

    def __missing__(self, name: str) -> Region:
        raise UnknownRegionError(name, sorted(self))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def load_regions(path: Path | None = None) -> RegionTable:
    """Read every configured region. Raises ValueError naming the file and region on malformed entries."""
    path = Path(path) if path is not None else DEFAULT_REGIONS_PATH
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("regions"), dict) or not raw["regions"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'regions' mapping")
    table = RegionTable()
    for name, spec in raw["regions"].items():
        where = f"{path}: region {name!r}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping")
        language = spec.get("language")
        if not isinstance(language, str) or not language:
            raise ValueError(f"{where}: 'language' is required (e.g. en-US)")
        slang = spec.get("slang") or {}
        if not isinstance(slang, dict):
            raise ValueError(f"{where}: 'slang' must map phrases to replacements")
        bad = {k: v for k, v in slang.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            # YAML 1.1 reads bare yes/no/on/off as booleans: quote them in the file
            raise ValueError(f"{where}: slang entries must be text (quote yes/no): {bad!r}")
        table[str(name)] = Region(
            name=str(name),
            language=language,
            compliance_tags=_str_list(spec.get("compliance_tags"), f"{where}: compliance_tags"),
            slang=dict(slang),
            secondary_languages=_str_list(spec.get("secondary_languages"), f"{where}: secondary_languages"),
        )
    return table


def get_region(name: str, path: Path | None = None) -> Region:
    """One region by name; UnknownRegionError (a KeyError) lists the configured regions."""
    return load_regions(path)[name]
