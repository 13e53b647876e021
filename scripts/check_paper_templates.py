"""Check the shipped paper templates against the real promptsource renderer, record by record.

The evaluate stage renders the paper's templates itself (bonito_adapt/evaluate/tasks/paper_prompts.py),
with promptsource's semantics: promptsource 0.2.3 cannot be installed on Python >= 3.10. This script
loads promptsource's own `templates.py` from a source checkout and renders every record of the given
benchmark files with both, comparing inputs, targets and answer choices exactly.

    git clone https://github.com/bigscience-workshop/promptsource /tmp/promptsource   # v0.2.3 or 7dab96a
    python scripts/check_paper_templates.py --promptsource /tmp/promptsource \\
        --data ../shared/data/benchmarks [--limit 300]

Randomness: promptsource draws `choice` from Python's global `random`; the stage from a generator
seeded per template (paper_prompts.CHOICE_SEED). Seeding the global generator with the same seed
before each template's pass makes both draw the same sequence when they draw in the same order,
which is what the comparison then checks. Exit code 1 when any record differs.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import sys
import types
from pathlib import Path

from bonito_adapt.evaluate.tasks.paper_prompts import CHOICE_SEED, PaperTemplate, paper_templates


def load_promptsource(checkout: Path):
    """promptsource/templates.py as a module, without installing the package (it pins Python < 3.10)."""
    source = checkout / "promptsource" / "templates.py"
    if not source.is_file():
        raise SystemExit(f"{source} does not exist; pass --promptsource a promptsource checkout")
    if "pkg_resources" not in sys.modules:  # used only to find the bundled templates folder
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            stub = types.ModuleType("pkg_resources")
            stub.resource_filename = lambda package, name: str(checkout / "promptsource" / name)
            sys.modules["pkg_resources"] = stub
    spec = importlib.util.spec_from_file_location("promptsource_templates", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_records(path: Path, limit: int | None) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    records = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                records.append(json.loads(line))
                if limit and len(records) >= limit:
                    break
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promptsource", type=Path, required=True, help="a promptsource source checkout")
    parser.add_argument("--data", type=Path, required=True, help="the folder of the local benchmark files")
    parser.add_argument("--limit", type=int, default=None, help="records per file (default: all)")
    args = parser.parse_args(argv)
    promptsource = load_promptsource(args.promptsource)

    total_differences = 0
    for benchmark, entry in paper_templates().items():
        if not entry.get("local_file"):
            print(f"{benchmark}: no local file, skipped")
            continue
        path = args.data / Path(entry["local_file"]).name
        records = read_records(path, args.limit)
        for template in entry["templates"]:
            reference = promptsource.Template(template["name"], template["jinja"], "",
                                              answer_choices=template["answer_choices"])
            ours = PaperTemplate(benchmark, template["name"], seed=CHOICE_SEED)
            random.seed(CHOICE_SEED)
            differences = 0
            for index, record in enumerate(records):
                expected = ([part for part in reference.apply(record)], reference.get_answer_choices_list(record))
                got = (list(ours.input_and_target(record)), ours.choices(record))
                if expected != got:
                    differences += 1
                    if differences <= 3:
                        print(f"  {benchmark} / {template['name']} record {index}: promptsource {expected!r:.300} "
                              f"!= ours {got!r:.300}")
            total_differences += differences
            print(f"{benchmark} / {template['name']}: {len(records)} records, {differences} differences")
    print(f"total differences: {total_differences}")
    return 1 if total_differences else 0


if __name__ == "__main__":
    sys.exit(main())
