"""The recipe: one YAML file, validated by pydantic, with command-line overrides.

Precedence: defaults < recipe YAML < `key.sub=value` overrides. Every problem is reported
at once, in one line that names each field and says what is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from ._schema import Section, local_path
from .errors import UserError
from .evaluate.config import EvaluateConfig
from .generate.config import GenerateConfig
from .report.config import ReportConfig
from .train.config import TrainConfig

__all__ = ["Recipe", "STAGES", "load_recipe", "parse_overrides"]

STAGES = ("generate", "train", "evaluate", "report")


class Recipe(Section):
    """A whole adaptation: each stage section is optional; the stages present run in order."""

    name: str = Field(..., min_length=1, description="Run name, shown in reports.")
    output_dir: str = Field(..., description="Run directory; each stage writes into output_dir/<stage>/.")
    seed: int = Field(0, description="Global seed: when set, the seed of every stage that does not set its own "
                      "(generate.sampling.seed, train.seed, evaluate.seed); when not set, each stage keeps its "
                      "own default.")
    generate: GenerateConfig | None = None
    train: TrainConfig | None = None
    evaluate: EvaluateConfig | None = None
    report: ReportConfig | None = None

    @model_validator(mode="after")
    def _seed_stages(self) -> Recipe:
        if "seed" in self.model_fields_set:
            sections = (self.generate.sampling if self.generate else None, self.train, self.evaluate)
            for section in sections:
                if section is not None and "seed" not in section.model_fields_set:
                    section.seed = self.seed
        return self

    def stages(self) -> list[str]:
        """The stages this recipe configures, in pipeline order."""
        return [stage for stage in STAGES if getattr(self, stage) is not None]

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn `["train.max_steps=5", "generate.sampling.n=2"]` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value; write e.g. train.max_steps=5")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r} conflicts with another override of {part!r}")
        try:
            node[leaf] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise UserError(f"override {item!r}: the value {raw!r} is not valid YAML; write a YAML value "
                            "(text with special characters in double quotes)") from None
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        # A key may be any YAML scalar, even a string with a newline: show odd ones as repr.
        where = ".".join(str(p) if str(p).isprintable() else repr(p) for p in item["loc"]) or "recipe"
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key (check its spelling against `docs/recipe.md`)")
        elif item["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        elif item["loc"][-1:] == ("api_key_env",):  # never echo what may be a pasted key
            problems.append(f"{where}: must be the name of an environment variable holding the API key "
                            "(letters, digits, _), not the key itself")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message} (got {item.get('input')!r})" if "input" in item
                            and not isinstance(item.get("input"), dict) else f"{where}: {message}")
    return "; ".join(problems)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, merge overrides into, and validate a recipe file.

    Relative paths inside the recipe (output_dir, input files, local models) are taken
    relative to the recipe file's folder, so a recipe works from any working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {str(path)!r} does not exist; pass the path of a .yaml recipe (see recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UserError(f"recipe {str(path)!r} is not valid YAML{where}: {problem}; fix the syntax there") from None
    except UnicodeDecodeError:
        raise UserError(f"recipe {str(path)!r} is not a UTF-8 text file; pass a .yaml recipe") from None
    except OSError as error:
        raise UserError(f"recipe {str(path)!r} cannot be read ({error.strerror}); check its permissions") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {str(path)!r} must be a YAML mapping with `name`, `output_dir` and stage sections")
    data = _merge(data, parse_overrides(overrides or []))
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise UserError(f"recipe {str(path)!r} is invalid: {_format_errors(error)}") from None
    base = path.resolve().parent
    where = "output_dir"
    try:
        recipe.output_dir = local_path(base, recipe.output_dir)
        for where in recipe.stages():
            getattr(recipe, where).resolve_paths(base)
    except (RuntimeError, ValueError, OSError) as error:  # `~nosuchuser/...`, a NUL byte, a name too long
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise UserError(f"recipe {str(path)!r}: a path in {where} cannot be used ({reason}); "
                        "write it as a plain absolute or relative path") from None
    return recipe
