"""Loading tokenizers and causal LMs from a hub id, a local folder, or a GGUF file.

Every stage loads models through here so that a bad model reference always gives the same
one-line error, and `trust_remote_code` stays off unless the recipe turns it on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["check_model_reference", "load_tokenizer", "load_causal_lm", "torch_dtype"]


def check_model_reference(name: str, field: str, gguf_file: str | None = None) -> None:
    """Fail early, in one line, on a local model path that does not exist."""
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not Path(name).expanduser().exists():
        raise UserError(f"{field}: model path {name!r} does not exist; give a local model folder or a Hugging Face id")
    if gguf_file and looks_local:
        gguf = Path(gguf_file) if Path(gguf_file).is_absolute() else Path(name) / gguf_file
        if not gguf.is_file():
            raise UserError(f"{field}: GGUF file {str(gguf)!r} does not exist; check gguf_file")


def _wrap_load_error(name: str, field: str, error: Exception) -> UserError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(
        f"{field}: could not load {name!r} ({detail[:200]}); give a local model folder, "
        "or a Hugging Face id with network access (and HF_TOKEN set for gated models)"
    )


def torch_dtype(name: str, device: str):
    """`auto` -> bf16 on CUDA, fp32 elsewhere; otherwise the named dtype."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def load_tokenizer(name: str, *, field: str, gguf_file: str | None = None, trust_remote_code: bool = False,
                   padding_side: str | None = None):
    from transformers import AutoTokenizer

    check_model_reference(name, field, gguf_file)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        raise _wrap_load_error(name, field, error) from None
    if padding_side:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; EOS is the conventional stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, *, field: str, gguf_file: str | None = None, dtype=None,
                   trust_remote_code: bool = False, **kwargs: Any):
    from transformers import AutoModelForCausalLM

    check_model_reference(name, field, gguf_file)
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        return AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as error:
        raise _wrap_load_error(name, field, error) from None
