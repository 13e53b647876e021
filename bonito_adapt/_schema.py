"""The base class every recipe section derives from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Section", "split_settings", "local_path", "maybe_local_path"]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # Fields that change how a stage computes its artifacts, not what they are (batch sizes, kernels,
    # compile flags, concurrency, timeouts, checkpoint and log cadence). A stage's fingerprint leaves them
    # out, so changing one never discards finished work; its manifest records them.
    execution_fields: ClassVar[frozenset[str]] = frozenset()


def split_settings(section: BaseModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the settings that change results, the execution settings) of a section, nested sections included."""
    return _split(section, section.model_dump(mode="json"))


def _split(section: BaseModel, dumped: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    results: dict[str, Any] = {}
    execution: dict[str, Any] = {}
    for name in type(section).model_fields:
        value, value_json = getattr(section, name), dumped[name]
        if name in getattr(section, "execution_fields", ()):
            execution[name] = value_json
        elif isinstance(value, BaseModel):
            results[name], inner = _split(value, value_json)
            if inner:
                execution[name] = inner
        elif isinstance(value, list) and value and all(isinstance(item, BaseModel) for item in value):
            parts = [_split(item, item_json) for item, item_json in zip(value, value_json, strict=True)]
            results[name] = [part[0] for part in parts]
            if any(part[1] for part in parts):
                execution[name] = [part[1] for part in parts]
        else:
            results[name] = value_json
    return results, execution


def local_path(base: Path, value: str) -> str:
    """A path from a recipe, made absolute relative to the recipe's folder."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def maybe_local_path(base: Path, value: str | None) -> str | None:
    """Resolve `value` as a local path if it looks like one (./, /, ~ or exists); else keep it (a hub id)."""
    if value and (value.startswith((".", "/", "~")) or (base / value).exists()):
        return local_path(base, value)
    return value
