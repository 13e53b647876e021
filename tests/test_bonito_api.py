"""The drop-in `Bonito` API, on the transformers engine with a tiny random model."""

from __future__ import annotations

import datasets
import pytest
import torch

from bonito_adapt import Bonito
from bonito_adapt.engines.spec import SamplingConfig
from bonito_adapt.errors import UserError

PASSAGES = ["The receiving party shall not disclose confidential information.",
            "Materials are returned within thirty days of a written request."]


@pytest.fixture(scope="module")
def bonito(tiny_model_dir):
    model = Bonito(str(tiny_model_dir), engine="transformers", batch_size=2, dtype="float32")
    yield model
    model.close()


def _script_completions(bonito, monkeypatch, completions: list[str]):
    """Make the model's generate return `completions` (tokenized) after each prompt, in order."""
    tokenizer = bonito.engine.tokenizer
    calls = []

    def scripted_generate(input_ids, attention_mask, **kwargs):
        calls.append(kwargs)
        rows = []
        for text in completions[: input_ids.shape[0]]:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append(ids)
        width = max(len(r) for r in rows)
        new = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, new], dim=1)

    monkeypatch.setattr(bonito.engine.model, "generate", scripted_generate)
    return calls


def test_generate_tasks_parses_like_the_original(bonito, monkeypatch):
    # Prompts are length-sorted: the longer passage goes first, so its completion is listed first.
    longer_first = sorted(range(2), key=lambda i: -bonito.engine.count_tokens(PASSAGES[i]))
    scripted = {longer_first[0]: "Does {{context}} allow disclosure?<|pipe|> No ",
                longer_first[1]: "two<|pipe|>pipes<|pipe|>here"}
    calls = _script_completions(bonito, monkeypatch, [scripted[i] for i in longer_first])
    text_dataset = datasets.Dataset.from_dict({"input": PASSAGES, "other": [1, 2]})
    tasks = bonito.generate_tasks(text_dataset, context_col="input", task_type="ynqa",
                                  sampling_params={"max_tokens": 16, "temperature": 0.5, "top_p": 0.95, "n": 1})
    assert isinstance(tasks, datasets.Dataset) and tasks.column_names == ["input", "output"]
    index = longer_first[0]
    assert tasks.to_list() == [{"input": f"Does {PASSAGES[index]} allow disclosure?", "output": "No"}]
    assert calls[0]["max_new_tokens"] == 16 and calls[0]["do_sample"]
    warper = calls[0]["logits_processor"][0]  # temperature and top-p, applied by the engine's NucleusWarper
    assert (warper.temperature, warper.top_p) == (0.5, 0.95)


def test_sampling_params_from_a_vllm_like_object(bonito, monkeypatch):
    class SamplingParams:  # the attributes vllm.SamplingParams has
        def __init__(self, **kwargs):
            self.n, self.temperature, self.top_p, self.max_tokens, self.seed = 1, 1.0, 1.0, 16, None
            self.__dict__.update(kwargs)

    calls = _script_completions(bonito, monkeypatch, ["q<|pipe|>a"])
    tasks = bonito.generate_tasks(datasets.Dataset.from_dict({"text": PASSAGES[:1]}), context_col="text",
                                  task_type="qa", sampling_params=SamplingParams(max_tokens=7, temperature=0.0))
    assert tasks.to_list() == [{"input": "q", "output": "a"}]
    assert calls[0]["max_new_tokens"] == 7 and not calls[0]["do_sample"]


def test_real_sampling_returns_a_dataset_even_without_parses(bonito):
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=4, seed=0)
    tasks = bonito.generate_tasks(datasets.Dataset.from_dict({"text": PASSAGES}), context_col="text",
                                  task_type="nli", sampling_params=sampling)
    assert tasks.column_names == ["input", "output"] and len(tasks) <= 4


def test_mistakes_are_one_line_user_errors(bonito, tiny_model_dir):
    dataset = datasets.Dataset.from_dict({"text": PASSAGES})
    with pytest.raises(UserError, match="column 'input' is not in the dataset; its columns are text"):
        bonito.generate_tasks(dataset, context_col="input", task_type="nli")
    with pytest.raises(UserError, match="unknown task type 'poetry'"):
        bonito.generate_tasks(dataset, context_col="text", task_type="poetry")
    with pytest.raises(UserError, match="sampling_params.*top_p"):
        bonito.generate_tasks(dataset, context_col="text", task_type="nli", sampling_params={"top_p": 2.0})
    with pytest.raises(UserError, match="unknown engine argument 'bogus'"):
        Bonito(str(tiny_model_dir), engine="transformers", bogus=1)


def test_engine_arguments_reach_the_right_sections(tiny_model_dir, monkeypatch):
    from bonito_adapt import bonito as bonito_module

    seen = []
    monkeypatch.setattr(bonito_module, "load_engine", lambda name, spec: seen.append((name, spec)) or object())
    Bonito("some/model", engine="vllm", tensor_parallel_size=2, max_model_len=4096)
    prompted = Bonito("some/model", engine="openai", base_url="http://127.0.0.1:9/v1", concurrency=4, style="prompted",
                      batch_size=8)
    (vllm_name, vllm_spec), (openai_name, openai_spec) = seen
    assert vllm_name == "vllm" and vllm_spec.vllm.tensor_parallel_size == 2
    assert vllm_spec.vllm.max_model_len == 4096 and vllm_spec.model == "some/model"
    assert openai_name == "openai" and openai_spec.openai.base_urls == ["http://127.0.0.1:9/v1"]
    assert openai_spec.openai.concurrency == 4 and openai_spec.transformers.batch_size == 8
    assert prompted.style == "prompted" and openai_spec.origin == "Bonito"
