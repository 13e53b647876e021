"""The Bonito paper's evaluation templates, rendered with promptsource's semantics.

`paper_templates.json` is a byte-for-byte copy of the protocol's template file (the paper's
experiment code, BatsResearch/nayak-aclfindings24-code @ d185657, for PubMedQA, PrivacyQA,
ContractNLI and VitaminC; promptsource 0.2.3 for SQuADShifts, Reddit derived from Amazon as the
paper's code derives it). Each template is jinja whose output is `input ||| target`, with
`answer_choices` (for ranked benchmarks) `choice ||| choice ||| ...`.

Rendering follows `promptsource.templates.Template.apply` (0.2.3), as the paper's code calls it:

1. Every variable is capped at 2,048 characters: each `}}` of the jinja becomes
   `| string | truncate(2048) }}` (Jinja's `truncate`: a value of up to 2,053 characters stays; a
   longer one is cut to its last whole word within 2,045 characters, plus "...").
2. `|||` inside string fields of the record is protected, so only the template's own separators split.
3. `answer_choices` (rendered without the cap, split on `|||`, each stripped) is put in the render
   context, so `{{answer_choices[label]}}` works.
4. Jinja defaults (`Environment(loader=BaseLoader)`), the filters `choice` and `most_frequent` and the
   global `zip`; the output is split on `|||` and each part stripped.

`choice` draws from a `random.Random` seeded per template (the paper's code used Python's global,
unseeded generator, so its SQuADShifts `question_num_hint_answer` prefixes cannot be reproduced; a
seed makes ours repeat). Jinja folds a filter over constants (`["Question", "Problem"] | choice`)
when it compiles a template; promptsource compiles in every `apply`, so the word varies by record
and is drawn before the render's own draws. Here each template compiles once and `choice` takes the
render context, which keeps Jinja from folding it: the word is drawn first in the render, so the
draws come in promptsource's order (the folded expression opens the only template that has one).
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["TEMPLATES_FILE", "TEXT_VAR_LENGTH", "paper_templates", "PaperTemplate", "ranked_docs", "squad_docs",
           "task_name"]

TEMPLATES_FILE = Path(__file__).with_name("paper_templates.json")
TEXT_VAR_LENGTH = 2048
SEPARATOR = "|||"
# Stands in for `|||` inside a record's strings while the template's own separators are split.
_PROTECTED_SEPARATOR = "\x00bonito-adapt-separator\x00"
# The seed of every template's `choice` draws (lm-eval's default seed; the paper's code set none).
CHOICE_SEED = 1234


@functools.cache
def paper_templates() -> dict[str, Any]:
    """The protocol's template file: benchmark -> {dataset, config, split, scoring, templates, ...}."""
    return json.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))


def task_name(benchmark: str, template: str) -> str:
    """The lm-eval task of one template: `contract_nli_prompt_1`, `pubmed_qa_im_a_doctor`, ..."""
    slug = "".join(ch if ch.isalnum() else "_" for ch in template.lower())
    return f"{benchmark}_{'_'.join(part for part in slug.split('_') if part)}"


def _most_frequent(items):
    """The items that occur most often, in first-seen order (promptsource's `most_frequent` filter)."""
    if not items:
        return None
    counts = Counter(items).most_common()
    return [item for item, count in counts if count == counts[0][1]]


class PaperTemplate:
    """One template of `paper_templates.json`, rendered as promptsource renders it."""

    def __init__(self, benchmark: str, name: str, seed: int = CHOICE_SEED):
        import jinja2

        entry = next((t for t in paper_templates()[benchmark]["templates"] if t["name"] == name), None)
        if entry is None:
            raise KeyError(f"{benchmark} has no paper template {name!r}")
        self.benchmark, self.name = benchmark, name
        self.jinja = entry["jinja"].replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
        self.answer_choices = entry["answer_choices"]
        draw = random.Random(seed).choice

        @jinja2.pass_context  # taking the context keeps Jinja from folding it at compile time
        def choice(context, items):
            return draw(items)

        environment = jinja2.Environment(loader=jinja2.BaseLoader)
        environment.filters["choice"] = choice
        environment.filters["most_frequent"] = _most_frequent
        environment.globals.update(zip=zip)
        self._template = environment.from_string(self.jinja)
        self._choices_template = None if self.answer_choices is None else environment.from_string(self.answer_choices)

    @staticmethod
    def _protect(record: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value.replace(SEPARATOR, _PROTECTED_SEPARATOR) if isinstance(value, str) else value
                for key, value in record.items()}

    def choices(self, record: Mapping[str, Any]) -> list[str] | None:
        """The rendered answer choices (no length cap, as in promptsource), or None."""
        if self._choices_template is None:
            return None
        rendered = self._choices_template.render(**self._protect(record))
        return [part.replace(_PROTECTED_SEPARATOR, SEPARATOR).strip() for part in rendered.split(SEPARATOR)]

    def apply(self, record: Mapping[str, Any]) -> list[str]:
        """The rendered parts, split on `|||` and stripped: `[input, target]` for every paper template."""
        if "answer_choices" in record:
            raise ValueError("a record field is named 'answer_choices', which promptsource reserves; rename it")
        context = self._protect(record)
        context["answer_choices"] = self.choices(record)
        rendered = self._template.render(**context)
        return [part.replace(_PROTECTED_SEPARATOR, SEPARATOR).strip() for part in rendered.split(SEPARATOR)]

    def input_and_target(self, record: Mapping[str, Any]) -> tuple[str, str]:
        parts = self.apply(record)
        if len(parts) != 2:  # the paper's code unpacks exactly two parts
            raise ValueError(f"{self.benchmark} template {self.name!r} rendered {len(parts)} parts, not input ||| target")
        return parts[0], parts[1]


# (benchmark, template, dataset fingerprint) -> the processed dataset. lm-eval calls a task's `process_docs` on
# every `test_docs()` (25 times in one evaluation of five templates), and rendering a whole test split each time
# was most of an evaluation's time outside the model (8.6 s of ContractNLI's 13.4 on the H200). Rendering is
# deterministic (each call draws from a freshly seeded generator), so a repeat returns the same rows.
_PROCESSED: OrderedDict[tuple, Any] = OrderedDict()
_PROCESSED_KEEP = 64


def _processed_once(benchmark: str, name: str, process: Callable) -> Callable:
    """`process`, computed once per (benchmark, template, dataset content); datasets without a fingerprint
    (not a `datasets.Dataset`) are processed every time."""

    @functools.wraps(process)
    def cached(dataset):
        fingerprint = getattr(dataset, "_fingerprint", None)
        if fingerprint is None:
            return process(dataset)
        key = (benchmark, name, fingerprint)
        if key in _PROCESSED:
            _PROCESSED.move_to_end(key)
            return _PROCESSED[key]
        result = _PROCESSED[key] = process(dataset)
        while len(_PROCESSED) > _PROCESSED_KEEP:
            _PROCESSED.popitem(last=False)
        return result

    return cached


def ranked_docs(benchmark: str, name: str, prepare: Callable | None = None) -> Callable:
    """A `process_docs` function: each record gains `paper_input`, `paper_target`, `paper_choices` and
    `paper_label` (the target's index in the choices, as the paper's code takes it)."""

    def process(dataset):
        if prepare is not None:
            dataset = prepare(dataset)
        template = PaperTemplate(benchmark, name)

        def render(record):
            task_input, target = template.input_and_target(record)
            choices = template.choices(record)
            if target not in choices:
                raise ValueError(f"{benchmark} template {name!r}: target {target!r} is not one of {choices}")
            return {"paper_input": task_input, "paper_target": target, "paper_choices": choices,
                    "paper_label": choices.index(target)}

        return _map_in_order(dataset, render)

    return _processed_once(benchmark, name, process)


def _map_in_order(dataset, render: Callable[[dict], dict]):
    """`dataset` with the columns `render` adds to each record, rendered in record order in this process
    (the draws of a template follow the records) and never read from datasets' cache."""
    def batch(columns):
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        rendered = [render(row) for row in rows]
        return {key: [row[key] for row in rendered] for key in rendered[0]} if rendered else {}

    return dataset.map(batch, batched=True, batch_size=1000, load_from_cache_file=False)


def squad_docs(benchmark: str, name: str) -> Callable:
    """A `process_docs` function for SQuADShifts: `paper_input` (the rendered question, capped like every
    variable) and `paper_target` (the first gold answer, the one the paper's code scores against)."""

    def process(dataset):
        template = PaperTemplate(benchmark, name)

        def render(record):
            task_input, _ = template.input_and_target(record)  # the target is drawn (and unused), as in the paper
            answers = list(record["answers"]["text"])
            return {"paper_input": task_input, "paper_target": answers[0] if answers else ""}

        return _map_in_order(dataset, render)

    return _processed_once(benchmark, name, process)
