"""Prompt/parse parity with the original bonito package (BatsResearch/bonito, abstract.py + model.py)."""

import pytest

from bonito_adapt.errors import UserError
from bonito_adapt.generate.task_format import (
    TASK_TYPES,
    bonito_prompt,
    full_task_type,
    parse_bonito_output,
    short_task_type,
)


def original_prompt(context: str, task_type: str) -> str:
    # Verbatim logic of AbstractBonito._prepare_bonito_input.process
    full = TASK_TYPES.get(task_type, task_type)
    input_text = "<|tasktype|>\n" + full.strip()
    input_text += "\n<|context|>\n" + context.strip() + "\n<|task|>\n"
    return input_text


def original_parse(generated: str, context: str):
    # Verbatim logic of Bonito.generate_tasks (strip) + _postprocess_dataset (filter, map), on bonito's main
    # branch (c19dd2b, "fix: replace {{context}} in output"; v0.1.0 and earlier left the output alone)
    prediction = generated.strip()
    if len(prediction.split("<|pipe|>")) != 2:
        return None
    pair = prediction.split("<|pipe|>")
    return (pair[0].strip().replace("{{context}}", context.strip()),
            pair[1].strip().replace("{{context}}", context.strip()))


CONTEXT = "  The Receiving Party shall not disclose Confidential Information.\n"
PREDICTIONS = [
    "no pipe at all",
    "",
    "<|pipe|>",
    "a<|pipe|>b<|pipe|>c",
    "Premise: {{context}}\nHypothesis: It may disclose.<|pipe|>No",
    "Question?<|pipe|>Answer mentions {{context}} verbatim",
    "  \n spaced input \t<|pipe|>  spaced output \n\n",
    "{{context}}<|pipe|>{{context}}",
    "{{ context }} is not the placeholder<|pipe|>yes",
    "<|pipe|>only output",
    "only input<|pipe|>",
    "multi\nline\ninput<|pipe|>multi\nline output</s>",
]


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_parse_matches_original(prediction):
    assert parse_bonito_output(prediction, CONTEXT) == original_parse(prediction, CONTEXT)


def test_parse_hand_checked_values():
    assert parse_bonito_output("no pipe", CONTEXT) is None
    assert parse_bonito_output("a<|pipe|>b<|pipe|>c", CONTEXT) is None
    assert parse_bonito_output("Read: {{context}}<|pipe|> Yes ", "  ctx  ") == ("Read: ctx", "Yes")
    # {{context}} in the output part is the passage too (text_gen outputs), as the current original does.
    assert parse_bonito_output("q<|pipe|>{{context}}", " ctx ") == ("q", "ctx")
    assert parse_bonito_output("  x  <|pipe|>\n y\n", "c") == ("x", "y")


@pytest.mark.parametrize("task_type", list(TASK_TYPES) + list(TASK_TYPES.values()))
def test_prompt_matches_original(task_type):
    assert bonito_prompt(CONTEXT, task_type) == original_prompt(CONTEXT, task_type)


def test_prompt_exact_text():
    assert bonito_prompt(" A passage. ", "nli") == (
        "<|tasktype|>\nnatural language inference\n<|context|>\nA passage.\n<|task|>\n"
    )


def test_task_type_names():
    assert len(TASK_TYPES) == 16
    assert full_task_type("exqa") == "extractive question answering"
    assert short_task_type("yes-no question answering") == "ynqa"
    with pytest.raises(UserError, match="unknown task type 'nlii'"):
        full_task_type("nlii")
