"""Padding-free attention through PyTorch's own variable-length FlashAttention kernel.

In a padding-free batch (TRL's `padding_free=True`) a micro-batch is one row of concatenated
examples, and TRL's collator passes the example boundaries (`cu_seq_lens_q/k`, `max_length_q/k`).
With SDPA, transformers turns them into a block-diagonal mask over the whole row, so attention
costs (row length)^2 instead of the sum of (example length)^2, through a slower masked kernel.
FlashAttention's varlen kernel avoids both, but the `flash-attn` package is often missing (it
builds against one CUDA/torch pair). PyTorch >= 2.10 ships the same kernel as
`torch.nn.attention.varlen.varlen_attn`; this module registers it with transformers'
`AttentionInterface` as `attn_implementation="varlen"`.

Calls without example boundaries (padded batches, generation, evaluation) go to SDPA unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Any

__all__ = ["VARLEN", "varlen_supported", "register_varlen_attention", "varlen_attention_forward"]

VARLEN = "varlen"


def varlen_supported() -> bool:
    """True where PyTorch has the varlen kernel and a CUDA GPU to run it."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("torch.nn.attention.varlen") is not None


def register_varlen_attention() -> str:
    """Make `attn_implementation="varlen"` known to transformers; returns the name."""
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, _varlen_mask)
    return VARLEN


def _varlen_mask(attention_mask=None, **kwargs):
    """No mask for unpadded rows (boundaries travel in cu_seq_lens, as for FlashAttention); SDPA's for padded ones."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def _boundaries_from_positions(position_ids, total: int):
    """cu_seq_lens and the longest example of a packed row, from position ids that restart at 0."""
    import torch

    starts = (position_ids[0] == 0).nonzero().flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        return None, None
    cu = torch.cat([starts, torch.tensor([total], device=starts.device)]).to(torch.int32)
    return cu, int(cu.diff().max())


@functools.cache
def _kernel():
    """The kernel and its keyword names (they changed between torch 2.11 and 2.12); looked up once."""
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


def varlen_attention_forward(module, query, key, value, attention_mask, scaling: float | None = None,
                             dropout: float = 0.0, sliding_window: int | None = None, **kwargs: Any):
    """transformers attention function: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seq_q, cu_seq_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
    if cu_seq_q is None and attention_mask is None and query.shape[0] == 1 and kwargs.get("position_ids") is not None:
        cu_seq_q, max_q = _boundaries_from_positions(kwargs["position_ids"], query.shape[2])
        cu_seq_k, max_k = cu_seq_q, max_q
    kernel, params = _kernel()
    windowed = sliding_window is not None and max_k is not None and sliding_window < int(max_k)
    unusable = (
        cu_seq_q is None or cu_seq_k is None or query.shape[0] != 1 or attention_mask is not None
        or (dropout and module.training) or (windowed and "window_size" not in params)
    )
    if unusable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      sliding_window=sliding_window, **kwargs)

    q = query[0].transpose(0, 1)  # (tokens, heads, dim)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    options: dict[str, Any] = {"scale": scaling}
    if "window_size" in params:  # torch >= 2.12: (left, right); (-1, 0) is causal
        options["window_size"] = (sliding_window - 1 if windowed else -1, 0)
    else:  # torch 2.10 / 2.11
        options["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            options["enable_gqa"] = True
        else:
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    import torch

    cu_q = cu_seq_q.to(device=q.device, dtype=torch.int32)
    cu_k = cu_seq_k.to(device=q.device, dtype=torch.int32)
    out = kernel(q.contiguous(), k.contiguous(), v.contiguous(), cu_q, cu_k, int(max_q), int(max_k), **options)
    return out.unsqueeze(0), None
