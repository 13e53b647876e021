"""Write docs/recipe.md, the recipe reference, from the pydantic schema (fields, types, defaults, help).

    python scripts/gen_recipe_docs.py          # rewrite docs/recipe.md
    python scripts/gen_recipe_docs.py --check  # exit 1 if docs/recipe.md is stale (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from bonito_adapt.config import Recipe

OUT = Path(__file__).resolve().parent.parent / "docs" / "recipe.md"

HEADER = """# Recipe reference

A recipe is one YAML file. `name` and `output_dir` are required; each stage section
(`generate`, `train`, `evaluate`, `report`) is optional and the stages present run in that
order. Unknown keys are errors. Relative paths are relative to the recipe file. Any field can be
overridden on the command line: `python -m bonito_adapt run RECIPE train.max_steps=5 generate.sampling.n=2`.

This page is generated from the schema by `scripts/gen_recipe_docs.py`; do not edit it by hand.
"""


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        return " \\| ".join(_type_name(a) for a in args)
    inner = ", ".join(_type_name(a) for a in args)
    return f"{getattr(origin, '__name__', str(origin))}[{inner}]"


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`"


def _model_of(annotation):
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        if typing.get_origin(candidate) is list:
            inner = typing.get_args(candidate)[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _section(model: type[BaseModel], prefix: str, lines: list[str]) -> None:
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    lines += ["", f"## `{prefix or 'top level'}`", ""]
    if doc:
        lines += [doc, ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None:
            nested.append((name, sub))
        # A section without its own description is described by its class docstring.
        help_text = field.description or ((sub.__doc__ or "").strip().split("\n")[0] if sub else "")
        help_text = (help_text or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {help_text} |")
    for name, sub in nested:
        _section(sub, f"{prefix}.{name}" if prefix else name, lines)


def render() -> str:
    lines = [HEADER.rstrip()]
    _section(Recipe, "", lines)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print("docs/recipe.md is stale: run `python scripts/gen_recipe_docs.py`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
