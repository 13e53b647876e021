"""How a passage becomes a generator prompt and a generation becomes a task.

Bonito's prompt format and output parser are byte-for-byte the original `bonito` package's.

The original (BatsResearch/bonito, ``bonito/abstract.py`` and ``bonito/model.py``) builds
``"<|tasktype|>\\n" + full_type.strip() + "\\n<|context|>\\n" + context.strip() + "\\n<|task|>\\n"``,
strips each prediction, keeps only predictions with exactly one ``<|pipe|>`` (every one of the `n`
samples, since v0.0.2), and returns ``input = part0.strip().replace("{{context}}", context.strip())``
and ``output = part1.strip().replace("{{context}}", context.strip())``. The replacement in the output
follows the package's main branch (commit c19dd2b, 2025-02-24, "fix: replace {{context}} in output",
after its last release v0.1.0, which left a text_gen output as the literal ``{{context}}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..errors import UserError

if TYPE_CHECKING:
    from ..engines.spec import EngineSpec

__all__ = [
    "TASK_TYPES",
    "PIPE",
    "full_task_type",
    "short_task_type",
    "bonito_prompt",
    "parse_bonito_output",
    "TaskFormat",
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

    ``{{context}}`` in either part is replaced by the stripped passage, as the current original does.
    """
    parts = text.strip().split(PIPE)
    if len(parts) != 2:
        return None
    passage = context.strip()
    return parts[0].strip().replace("{{context}}", passage), parts[1].strip().replace("{{context}}", passage)


class TaskFormat:
    """Prompts and parsing for one generator style and task type.

    `bonito`: the Bonito prompt and parser. `prompted`: a chat model asked through its chat
    template (`prompted.py`); that needs the generator's tokenizer, taken from the engine when it
    has one, else loaded from `spec`.
    """

    def __init__(self, style: Literal["bonito", "prompted"], task_type: str, tokenizer=None,
                 spec: EngineSpec | None = None):
        self.style = style
        self.task_type = full_task_type(task_type)
        self.tokenizer = tokenizer
        if style == "prompted" and tokenizer is None:
            if spec is None:
                raise ValueError("style prompted needs the generator's tokenizer or its EngineSpec")
            from ..models import load_tokenizer

            name, field, gguf_file = spec.tokenizer_source
            self.tokenizer = load_tokenizer(name, field=field, gguf_file=gguf_file,
                                            trust_remote_code=spec.trust_remote_code)
        if style == "prompted" and not self.tokenizer.chat_template:
            shown = (spec.tokenizer or spec.model) if spec else "the generator"
            raise UserError(f"{spec.field('style') if spec else 'style'}: prompted needs a chat model, but "
                            f"{shown!r} has no chat template; use an instruct/chat model or style: bonito")

    def prompt(self, passage: str) -> str:
        if self.style == "bonito":
            return bonito_prompt(passage, self.task_type)
        from .prompted import prompted_prompt

        return prompted_prompt(self.tokenizer, passage, self.task_type)

    def parse(self, generation: str, passage: str) -> tuple[str, str] | None:
        if self.style == "bonito":
            return parse_bonito_output(generation, passage)
        from .prompted import prompted_task

        return prompted_task(generation, passage)
