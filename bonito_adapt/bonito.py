"""Drop-in replacement for the original package's `Bonito` class, on any engine.

    from bonito_adapt import Bonito
    bonito = Bonito("BatsResearch/Llama-3.1-8B-bonito-v1", engine="vllm")
    tasks = bonito.generate_tasks(text_dataset, context_col="input", task_type="nli",
                                  sampling_params={"max_tokens": 256, "top_p": 0.95, "temperature": 0.5, "n": 1})

As in the original, each row of `text_dataset` is one prompt (no passage splitting) and the result
is a `datasets.Dataset` with the columns `input` and `output`, holding only generations with
exactly one `<|pipe|>`, every parsed one of the `n` samples per row (as the original does since
v0.0.2). `{{context}}` is replaced by the passage in the output as well as the input, as the
current original does (its fix for text_gen outputs that were the literal `{{context}}`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .engines import load_engine
from .engines.spec import EngineSpec, OpenAIConfig, SamplingConfig, TransformersSettings, VLLMConfig
from .errors import UserError
from .generate.task_format import TaskFormat, full_task_type

__all__ = ["Bonito"]

_MODEL_FIELDS = ("tokenizer", "gguf_file", "dtype", "trust_remote_code")
_SAMPLING_FIELDS = ("n", "temperature", "top_p", "max_tokens", "seed")


def _engine_spec(model: str, engine_kwargs: dict[str, Any]) -> tuple[EngineSpec, str]:
    """Sort keyword arguments into an EngineSpec (model fields, each engine's settings) and the style."""
    top, transformers, vllm, openai = {}, {}, {}, {}
    style = engine_kwargs.pop("style", "bonito")
    for key, value in engine_kwargs.items():
        if key in _MODEL_FIELDS:
            top[key] = value
        elif key in TransformersSettings.model_fields:
            transformers[key] = value
        elif key in VLLMConfig.model_fields:
            vllm[key] = value
        elif key == "base_url":
            openai["base_urls"] = [value]
        elif key in OpenAIConfig.model_fields:
            openai[key] = value
        else:
            accepted = sorted({*_MODEL_FIELDS, "style", *TransformersSettings.model_fields, *VLLMConfig.model_fields,
                               *OpenAIConfig.model_fields, "base_url"})
            raise UserError(f"Bonito: unknown engine argument {key!r}; accepted: {', '.join(accepted)}")
    if style not in ("bonito", "prompted"):
        raise UserError(f"Bonito: invalid arguments: style: must be 'bonito' or 'prompted' (got {style!r})")
    try:
        return EngineSpec(model=model, transformers=transformers, vllm=vllm, openai=openai, origin="Bonito",
                          **top), style
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
        if engine not in ("auto", "vllm", "transformers", "openai"):
            raise UserError(f"Bonito: invalid arguments: engine: must be auto, vllm, transformers or openai "
                            f"(got {engine!r})")
        self.spec, self.style = _engine_spec(model, dict(engine_kwargs))
        self.engine = load_engine(engine, self.spec)

    def generate_tasks(self, text_dataset, context_col: str, task_type: str, sampling_params: Any = None):
        """Return a `datasets.Dataset` of `input`/`output` tasks, one per parsed generation."""
        import datasets

        if context_col not in text_dataset.column_names:
            raise UserError(f"Bonito.generate_tasks: column {context_col!r} is not in the dataset; its columns are "
                            f"{', '.join(text_dataset.column_names)}")
        full_task_type(task_type)  # an unknown task type fails here, in one line
        task_format = TaskFormat(self.style, task_type, tokenizer=getattr(self.engine, "tokenizer", None),
                                 spec=self.spec)
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
