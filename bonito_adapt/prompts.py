"""Bonito's prompt format and output parser, byte-for-byte as the original `bonito` package.

The original (BatsResearch/bonito, ``bonito/abstract.py`` and ``bonito/model.py``) builds
``"<|tasktype|>\\n" + full_type.strip() + "\\n<|context|>\\n" + context.strip() + "\\n<|task|>\\n"``,
strips each prediction, keeps only predictions with exactly one ``<|pipe|>``, and returns
``input = part0.strip().replace("{{context}}", context.strip())``, ``output = part1.strip()``.
"""

from __future__ import annotations

from .errors import UserError

__all__ = [
    "TASK_TYPES",
    "PIPE",
    "full_task_type",
    "short_task_type",
    "bonito_prompt",
    "parse_bonito_output",
    "training_prompt",
]

PIPE = "<|pipe|>"

# Short name -> the full name Bonito was trained with (the original SHORTFORM_TO_FULL_TASK_TYPES).
TASK_TYPES: dict[str, str] = {
    "exqa": "extractive question answering",
    "mcqa": "multiple-choice question answering",
    "qg": "question generation",
    "qa": "question answering without choices",
    "ynqa": "yes-no question answering",
    "coref": "coreference resolution",
    "paraphrase": "paraphrase generation",
    "paraphrase_id": "paraphrase identification",
    "sent_comp": "sentence completion",
    "sentiment": "sentiment",
    "summarization": "summarization",
    "text_gen": "text generation",
    "topic_class": "topic classification",
    "wsd": "word sense disambiguation",
    "te": "textual entailment",
    "nli": "natural language inference",
}
_FULL_TO_SHORT = {full: short for short, full in TASK_TYPES.items()}


def full_task_type(task_type: str) -> str:
    """Return the full task-type name for a short or full name; raise UserError if unknown."""
    if task_type in _FULL_TO_SHORT:
        return task_type
    if task_type in TASK_TYPES:
        return TASK_TYPES[task_type]
    raise UserError(
        f"unknown task type {task_type!r}; use one of: {', '.join(TASK_TYPES)} "
        "(or its full name; `python -m bonito_adapt tasks` lists them)"
    )


def short_task_type(task_type: str) -> str:
    """Return the short name (e.g. ``nli``) for a short or full task-type name."""
    return _FULL_TO_SHORT[full_task_type(task_type)]


def bonito_prompt(context: str, task_type: str) -> str:
    """Build the Bonito input for one passage, exactly as the original package does."""
    text = "<|tasktype|>\n" + full_task_type(task_type).strip()
    text += "\n<|context|>\n" + context.strip() + "\n<|task|>\n"
    return text


def parse_bonito_output(text: str, context: str) -> tuple[str, str] | None:
    """Parse one generation into ``(input, output)``; ``None`` if it has not exactly one pipe.

    ``{{context}}`` in the input is replaced by the stripped passage; as in the original,
    the output part is only stripped.
    """
    parts = text.strip().split(PIPE)
    if len(parts) != 2:
        return None
    return parts[0].strip().replace("{{context}}", context.strip()), parts[1].strip()


def training_prompt(task_input: str) -> str:
    """The prompt an adapted model sees, as the paper trains and evaluates: input then output tag."""
    return f"<|input|>\n{task_input}\n<|output|>\n"
