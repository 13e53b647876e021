"""The base class every recipe section derives from."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["Section", "local_path", "maybe_local_path"]


class Section(BaseModel):
    """A recipe section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def local_path(base: Path, value: str) -> str:
    """A path from a recipe, made absolute relative to the recipe's folder."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def maybe_local_path(base: Path, value: str | None) -> str | None:
    """Resolve `value` as a local path if it looks like one (./, /, ~ or exists); else keep it (a hub id)."""
    if value and (value.startswith((".", "/", "~")) or (base / value).exists()):
        return local_path(base, value)
    return value
