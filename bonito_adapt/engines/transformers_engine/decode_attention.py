"""Decode attention for the transformers engine.

For generation, `attn_implementation="sdpa_decode"` is SDPA whose one-token decode steps run
grouped-query attention on the key/value heads: the query heads that share a key/value head become
that head's query rows, instead of copying every cached key and value once per query head
(`repeat_kv`), which is what transformers' SDPA path does under torch.compile and whenever a
padding mask is present. On a GQA model (Llama-3.1-8B: 32 query heads, 8 key/value heads) that
copy is 4x the whole KV cache per step, the largest cost of a large-batch decode step.

Under torch.compile (the engine's compiled decode step) those one-token steps go through
FlexAttention's decoding kernel instead, with a block mask made from the padding mask: blocks of
the static cache that a row does not attend to (its left padding, and the positions not generated
yet) are skipped instead of read. A batch of prompts of mixed lengths over a static cache sized for
the longest is mostly such blocks: for 256 Bonito-length prompts (64-1,024 tokens) plus 256 new
tokens, a row attends to about half of a 1,280-token cache on average.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["DECODE_SDPA", "DECODE_BLOCK", "register_decode_attention", "decode_attention_forward",
           "flex_decode_attention"]

DECODE_SDPA = "sdpa_decode"
# Keys per block of the FlexAttention block mask (its default); cache lengths that are not a
# multiple of it stay on SDPA.
DECODE_BLOCK = 128
# Whether compiled one-token steps use FlexAttention (a switch for benchmarks and tests).
FLEX_DECODE = True
# Whether this torch has FlexAttention's BlockMask.from_kv_blocks (>= 2.5); set on registration,
# because compiled code should not look it up.
_FLEX_AVAILABLE = False


def register_decode_attention() -> str:
    """Make `attn_implementation="sdpa_decode"` known to transformers; returns the name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    global _FLEX_AVAILABLE
    _FLEX_AVAILABLE = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    AttentionInterface.register(DECODE_SDPA, decode_attention_forward)
    AttentionMaskInterface.register(DECODE_SDPA, sdpa_mask)
    return DECODE_SDPA


def decode_attention_forward(module, query, key, value, attention_mask, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs: Any):
    """transformers attention function: one-token steps through FlexAttention when compiled, else GQA on the
    key/value heads through SDPA; everything else through SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = query.shape[1] // key.shape[1]
    one_token = query.shape[2] == 1
    mask_per_head = attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[1] != 1
    plain = not one_token or mask_per_head or kwargs.get("position_bias") is not None \
        or kwargs.get("softcap") is not None or (dropout and module.training)
    # Eagerly, flex_attention is an unfused reference implementation: only compiled steps use it. Its
    # decoding kernel takes power-of-two query groups (other ratios fall back to a much slower kernel).
    if not plain and FLEX_DECODE and torch.compiler.is_compiling() and groups & (groups - 1) == 0 \
            and _flex_decode_usable(key, attention_mask):
        return flex_decode_attention(query, key, value, attention_mask[:, 0, 0, :], scaling), None
    if plain or groups == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    # Query head h uses key/value head h // groups (transformers' repeat_kv order), so the `groups`
    # query heads of one key/value head become its `groups` query rows; a (batch, 1, 1, keys) mask
    # broadcasts over them unchanged.
    packed = query.reshape(batch, heads // groups, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(packed, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def _flex_decode_usable(key, attention_mask) -> bool:
    """A boolean (batch, 1, 1, keys) padding mask over a cache of whole blocks: what the block mask is made from."""
    import torch

    return (attention_mask is not None and attention_mask.dtype == torch.bool and attention_mask.dim() == 4
            and attention_mask.shape[2] == 1 and attention_mask.shape[-1] == key.shape[2]
            and key.shape[2] % DECODE_BLOCK == 0 and _FLEX_AVAILABLE)


def flex_decode_attention(query, key, value, keep, scaling: float | None = None):
    """One-token attention reading only the key blocks that `keep` (batch, keys; True = attend) touches.

    query (batch, heads, 1, dim), key/value (batch, kv_heads, keys, dim); returns (batch, 1, heads, dim).
    Blocks entirely kept skip the mask; blocks partly kept (a row's first real token, the newest
    position) apply it; blocks with nothing kept are not visited.
    """
    import torch
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    batch, keys = keep.shape
    blocks = keep.view(batch, keys // DECODE_BLOCK, DECODE_BLOCK)
    touched, full = blocks.any(-1), blocks.all(-1)

    def block_list(selected):
        # The selected blocks' indices first (in order), as BlockMask expects, and how many there are.
        count = selected.sum(-1, dtype=torch.int32)
        order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return count[:, None, None], order[:, None, None, :]

    partial_count, partial_blocks = block_list(touched & ~full)
    full_count, full_blocks = block_list(full)

    def kept(b, h, q_index, kv_index):
        return keep[b, kv_index]

    block_mask = BlockMask.from_kv_blocks(partial_count, partial_blocks, full_count, full_blocks,
                                          BLOCK_SIZE=DECODE_BLOCK, mask_mod=kept, seq_lengths=(1, keys))
    out = flex_attention(query, key, value, block_mask=block_mask, scale=scaling,
                         enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous()
