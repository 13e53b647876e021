"""Drop-in replacement for the original package's `Bonito` class, on any engine.

    from bonito_adapt import Bonito
    bonito = Bonito("BatsResearch/Llama-3.1-8B-bonito-v1", engine="vllm")
    tasks = bonito.generate_tasks(text_dataset, context_col="input", task_type="nli",
                                  sampling_params={"max_tokens": 256, "top_p": 0.95, "temperature": 0.5, "n": 1})

As in the original, each row of `text_dataset` is one prompt (no passage splitting) and the result
is a `datasets.Dataset` with the columns `input` and `output`, holding only generations with
exactly one `<|pipe|>`. Unlike the original, which keeps only the first of `n` samples, every
parsed sample is returned.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .engines import load_engine
from .errors import UserError
from .generate import TaskFormat
from .generate_config import GenerateConfig, InputConfig, SamplingConfig, VLLMConfig
from .generate_config import OpenAIConfig as _OpenAIConfig
from .prompts import full_task_type

__all__ = ["Bonito"]

_TOP_LEVEL = ("tokenizer", "gguf_file", "dtype", "load_in_4bit", "batch_size", "compile_decode", "continuous_batching",
              "trust_remote_code", "style")
_SAMPLING_FIELDS = ("n", "temperature", "top_p", "max_tokens", "seed")


def _engine_config(model: str, engine: str, engine_kwargs: dict[str, Any]) -> GenerateConfig:
    """Sort keyword arguments into the GenerateConfig fields and its vllm/openai sections."""
    top, vllm, openai = {}, {}, {}
    for key, value in engine_kwargs.items():
        if key in _TOP_LEVEL:
            top[key] = value
        elif key in VLLMConfig.model_fields:
            vllm[key] = value
        elif key == "base_url":
            openai["base_urls"] = [value]
        elif key in _OpenAIConfig.model_fields:
            openai[key] = value
        else:
            accepted = sorted({*_TOP_LEVEL, *VLLMConfig.model_fields, *_OpenAIConfig.model_fields, "base_url"})
            raise UserError(f"Bonito: unknown engine argument {key!r}; accepted: {', '.join(accepted)}")
    try:
        # The engine never reads `input` or `task_type`; placeholders satisfy the recipe schema.
        return GenerateConfig(input=InputConfig(dataset="<in-memory>"), task_type="qa", model=model, engine=engine,
                              vllm=vllm, openai=openai, **top)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise UserError(f"Bonito: invalid arguments: {problems}") from None


def _sampling(sampling_params: Any) -> SamplingConfig:
    """Accept our SamplingConfig, a dict, or a vllm.SamplingParams-like object."""
    if sampling_params is None:
        return SamplingConfig()
    if isinstance(sampling_params, SamplingConfig):
        return sampling_params
    if isinstance(sampling_params, dict):
        values = dict(sampling_params)
    else:
        values = {name: getattr(sampling_params, name) for name in _SAMPLING_FIELDS if hasattr(sampling_params, name)}
    values = {key: value for key, value in values.items() if value is not None}
    try:
        return SamplingConfig(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise UserError(f"Bonito: invalid sampling_params: {problems}") from None


class Bonito:
    """Generate instruction tasks from unannotated text, like `bonito.Bonito`.

    Args:
        model: a Bonito model (hub id or local folder); with `style="prompted"`, any chat model.
        engine: "transformers", "vllm", "openai" or "auto".
        **engine_kwargs: GenerateConfig fields (dtype, batch_size, load_in_4bit, style, ...), vLLM
            settings (tensor_parallel_size, gpu_memory_utilization, max_model_len, ...), or OpenAI
            server settings (base_url / base_urls, model_name, concurrency, ...).
    """

    def __init__(self, model: str, engine: str = "transformers", **engine_kwargs: Any):
        self.config = _engine_config(model, engine, engine_kwargs)
        self.engine = load_engine(self.config)

    def generate_tasks(self, text_dataset, context_col: str, task_type: str, sampling_params: Any = None):
        """Return a `datasets.Dataset` of `input`/`output` tasks, one per parsed generation."""
        import datasets

        if context_col not in text_dataset.column_names:
            raise UserError(f"Bonito.generate_tasks: column {context_col!r} is not in the dataset; its columns are "
                            f"{', '.join(text_dataset.column_names)}")
        full_task_type(task_type)  # an unknown task type fails here, in one line
        config = self.config.model_copy(update={"task_type": task_type})
        task_format = TaskFormat(config, tokenizer=getattr(self.engine, "tokenizer", None))
        contexts = [str(text) for text in text_dataset[context_col]]
        generations = self.engine.generate([task_format.prompt(c) for c in contexts], _sampling(sampling_params))
        rows = []
        for context, samples in zip(contexts, generations, strict=True):
            for text in samples:
                parsed = task_format.parse(text, context)
                if parsed is not None:
                    rows.append({"input": parsed[0], "output": parsed[1]})
        features = datasets.Features({"input": datasets.Value("string"), "output": datasets.Value("string")})
        # from_dict, not from_list: an empty result must still have its two columns.
        columns = {"input": [row["input"] for row in rows], "output": [row["output"] for row in rows]}
        return datasets.Dataset.from_dict(columns, features=features)

    def close(self) -> None:
        self.engine.close()
