"""The lm-eval model of each evaluated model (`base`, `adapted`): which model and adapter, and the
model class that wraps its prompts and scores them (`protocol.py`, `scoring.py`).

Prompt formats (`evaluate.prompt_format`, per model): `auto` (the protocol's choice), `plain`,
`bonito` (`<|input|>\\n{prompt}\\n<|output|>\\n`, the training format), `instruct`
(`Instruct: {prompt}\\nAnswer:`), `mistral_instruct` (`[INST] {prompt} [/INST]`) or `chat` (the
tokenizer's chat template). Wrappers go in through lm-eval's chat-template hook, so the answer
choices follow the wrapped prompt directly (no target delimiter).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError, missing_extra
from ..models import check_model_reference
from ..rundir import hash_files, read_manifest
from .protocol import ProtocolMixin

if TYPE_CHECKING:
    from ..config import Recipe

__all__ = ["lm_class", "device_and_dtype", "build_lm", "release_lm", "model_specs", "adapter_fingerprint"]

_CPU_BATCH_SIZE = 8  # lm-eval's "auto" probes 64 full-length sequences: far too slow on a CPU


@functools.cache
def lm_class(backend: str, shared_context: bool = True):
    """lm-eval's model class for `backend` (hf, vllm) with the protocol's wrappers and encoding, and for hf
    (with `shared_context`) ranked choices scored in one pass over each context."""
    if backend == "vllm":
        try:
            import vllm  # noqa: F401
            from lm_eval.models.vllm_causallms import VLLM
        except ImportError:
            raise missing_extra("vllm", "vllm") from None

        return type("ProtocolVLLM", (ProtocolMixin, VLLM), {})
    from lm_eval.models.huggingface import HFLM

    from .scoring import SharedContextMixin

    bases = (ProtocolMixin, SharedContextMixin, HFLM) if shared_context else (ProtocolMixin, HFLM)
    return type("ProtocolHFLM" if shared_context else "ProtocolHFLMPerChoice", bases, {})


def device_and_dtype(dtype: str) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def build_lm(spec: dict[str, Any], cfg, device: str, dtype: str):
    if cfg.backend == "vllm":
        # 0.8 of the GPU, not vLLM's 0.9: what this process still caches (an earlier model) must fit beside it
        kwargs: dict[str, Any] = {"pretrained": spec["model"], "dtype": dtype, "batch_size": cfg.batch_size,
                                  "trust_remote_code": cfg.trust_remote_code, "seed": cfg.seed,
                                  "gpu_memory_utilization": 0.8}
        if spec["adapter"]:
            rank = json.loads((Path(spec["adapter"]) / "adapter_config.json").read_text()).get("r", 16)
            # vLLM takes only some maximum ranks (8, 16, 32, ...): the smallest that holds the adapter's
            kwargs.update(lora_local_path=spec["adapter"], max_lora_rank=max(8, 1 << (int(rank) - 1).bit_length()))
    else:
        batch_size = cfg.batch_size if device == "cuda" or cfg.batch_size != "auto" else _CPU_BATCH_SIZE
        kwargs = {"pretrained": spec["model"], "dtype": dtype, "device": device, "batch_size": batch_size,
                  "trust_remote_code": cfg.trust_remote_code}
        if spec["gguf_file"]:
            kwargs["gguf_file"] = spec["gguf_file"]
        if spec["adapter"]:
            kwargs["peft"] = spec["adapter"]
            if (Path(spec["adapter"]) / "tokenizer_config.json").is_file():
                kwargs["tokenizer"] = spec["adapter"]  # the train stage saves the tokenizer it trained with
    try:
        lm = lm_class(cfg.backend, cfg.shared_context)(**kwargs)
    except (OSError, ValueError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"evaluate: could not load the {spec['name']} model {spec['model']!r} ({detail}); "
                        "check evaluate.base_model / evaluate.adapter") from None
    if cfg.backend == "hf":
        _share_requests_across_processes(lm)
    if spec["prompt_format"] == "chat" and not lm.tokenizer.chat_template:
        raise UserError(f"evaluate.prompt_format.{spec['name']}: chat, but {spec['model']!r} has no chat template; "
                        "use plain (base models) or bonito (adapted models)")
    return lm


def release_lm(lm) -> None:
    """Stop a vLLM model's engine process, which holds its GPU memory until shut down, before the next model
    loads; an hf model's memory goes when the caller drops it."""
    llm = getattr(lm, "model", None) if lm is not None and type(lm).__name__.startswith("ProtocolVLLM") else None
    if llm is not None:
        from ..engines.vllm_engine import shutdown_llm

        lm.model = None
        shutdown_llm(llm)


def _share_requests_across_processes(lm) -> None:
    """lm-eval's HFLM splits requests over the processes of a launch only when there are several GPUs; on
    CPUs every process would score every request. Give it the launch's ranks there too."""
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is not None and accelerator.num_processes > 1 and lm.world_size == 1:
        lm._rank, lm._world_size = accelerator.process_index, accelerator.num_processes


def model_specs(recipe: Recipe, run_dir: Path) -> list[dict[str, Any]]:
    cfg = recipe.evaluate
    train = recipe.train
    base_model = cfg.base_model or (train.model if train else None)
    if not base_model:
        raise UserError("evaluate.base_model is not set and the recipe has no train section; "
                        "set evaluate.base_model to a model folder or Hugging Face id")
    gguf_file = cfg.gguf_file or (train.gguf_file if train and not cfg.base_model else None)
    check_model_reference(base_model, "evaluate.base_model", gguf_file)
    specs = []
    for name in cfg.models:
        adapter = None
        if name == "adapted":
            adapter = cfg.adapter or str(run_dir / "train" / "adapter")
            if not (Path(adapter) / "adapter_config.json").is_file():
                raise UserError(f"evaluate.models includes 'adapted' but {adapter!r} holds no PEFT adapter; "
                                "run the train stage first or set evaluate.adapter")
        specs.append({"name": name, "model": base_model, "gguf_file": gguf_file, "adapter": adapter,
                      "prompt_format": cfg.prompt_format.get(name, "auto")})
    return specs


def adapter_fingerprint(adapter: str, run_dir: Path) -> str:
    if Path(adapter).resolve() == (run_dir / "train" / "adapter").resolve():
        manifest = read_manifest(run_dir / "train")
        if manifest:
            return manifest["fingerprint"]
    return hash_files(p for p in Path(adapter).iterdir() if p.is_file())
