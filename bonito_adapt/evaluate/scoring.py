"""Ranked choice with one pass over each shared context.

lm-eval's HFLM runs one forward per (example, choice): with EOS-terminated choices (the paper's
protocol) nothing is shared, so a long context (a PubMedQA abstract, a whole NDA) is run once per
choice. Here the requests of one context are packed into one row: the context's tokens, then each
choice's tokens, with position ids that restart at the context's end for every choice and an
attention mask that lets a choice see the context and its own earlier tokens only. One forward over
the row gives every choice's log-likelihood exactly as separate forwards would (up to the numerics
of a different kernel shape), and rows of similar length are batched.

`SharedContextMixin` overrides HFLM's `_loglikelihood_tokens` (the scoring of already-encoded
requests), so lm-eval's tasks, request building, metrics and caching stay its own. Models whose
attention cannot take an arbitrary mask (flash-attention kernels) keep HFLM's own path.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Any

__all__ = ["SharedContextMixin", "pack_rows", "score_packed"]

# Tokens per forward (rows x padded length) when `evaluate.batch_size` is auto.
AUTO_TOKENS_CUDA = 16384
AUTO_TOKENS_CPU = 4096
LOG_SOFTMAX_ELEMENTS = 2**27  # choice tokens x vocabulary per float32 log-softmax (512 MiB)
_MASKABLE = ("sdpa", "eager")


def _truncated(context: list[int], continuation: list[int], max_length: int) -> list[int]:
    """The context lm-eval's HFLM keeps: context + continuation cut from the left to max_length + 1 tokens."""
    whole = (context + continuation)[-(max_length + 1):]
    if len(continuation) >= len(whole):
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's {max_length}")
    return whole[: len(whole) - len(continuation)]


def pack_rows(requests: list[tuple[Any, list[int], list[int]]], max_length: int) -> list[dict[str, Any]]:
    """One row per distinct context, longest first: `context` ids, `choices` [(request index, ids)], each
    choice's `spans` (start, end) in the row, and the row's `length`."""
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
    for index, (_, context, continuation) in enumerate(requests):
        groups[tuple(_truncated(list(context), list(continuation), max_length))].append((index, list(continuation)))
    rows = []
    for context, choices in groups.items():
        spans, start = [], len(context)
        for _, ids in choices:  # each choice's place in the row, after the context and the choices before it
            spans.append((start, start + len(ids)))
            start += len(ids)
        rows.append({"context": list(context), "choices": choices, "spans": spans, "length": start})
    return sorted(rows, key=lambda row: -row["length"])


def _batch_tensors(rows: list[dict[str, Any]], pad_id: int, dtype, device):
    """input_ids, position_ids and the additive (rows, 1, T, T) mask of a batch of packed rows."""
    import torch

    width = max(row["length"] for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 context, j + 1 choice j, -1 padding
    for r, row in enumerate(rows):
        context = row["context"]
        input_ids[r, : len(context)] = torch.tensor(context)
        positions[r, : len(context)] = torch.arange(len(context))
        segment[r, : len(context)] = 0
        for j, ((_, ids), (start, end)) in enumerate(zip(row["choices"], row["spans"], strict=True)):
            input_ids[r, start:end] = torch.tensor(ids)
            positions[r, start:end] = torch.arange(len(context), len(context) + len(ids))
            segment[r, start:end] = j + 1
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    allowed = causal & (key != -1) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no row of the mask is empty
    mask = torch.zeros((len(rows), 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return input_ids.to(device), positions.to(device), mask.to(device)


def score_packed(model, rows: list[dict[str, Any]], pad_id: int) -> dict[int, tuple[float, bool]]:
    """(summed log-probability, is greedy) of every choice in `rows`, by request index; one forward."""
    import torch
    import torch.nn.functional as F

    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.bfloat16
    device = next(model.parameters()).device
    input_ids, positions, mask = _batch_tensors(rows, pad_id, dtype, device)
    # The logits needed: the last context token (predicts each choice's first token) and every choice
    # token but the last; asked for by position where the model allows it, so no full-vocabulary
    # logits are made for the context.
    predicting: list[list[tuple[int, list[int], list[int]]]] = []
    wanted: set[int] = set()
    for row in rows:
        last_context = len(row["context"]) - 1
        per_choice = []
        for (index, ids), (start, end) in zip(row["choices"], row["spans"], strict=True):
            at = [last_context, *range(start, end - 1)]
            per_choice.append((index, at, ids))
            wanted.update(at)
        predicting.append(per_choice)
    kwargs: dict[str, Any] = {}
    keep = sorted(wanted)
    if _takes_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
        column = {position: i for i, position in enumerate(keep)}
    else:
        column = {position: position for position in keep}
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                       **kwargs).logits
    # Every choice token of the batch at once (a loop per choice made two host syncs per choice): the logits
    # that predict it, its log-probability, whether it is the argmax; summed per choice on the device.
    requests, batch_rows, columns, targets, owners = [], [], [], [], []
    for r, per_choice in enumerate(predicting):
        for index, at, ids in per_choice:
            owners += [len(requests)] * len(ids)
            requests.append(index)
            batch_rows += [r] * len(at)
            columns += [column[p] for p in at]
            targets += ids
    batch_rows, columns, targets, owners = (torch.tensor(values, device=device)
                                            for values in (batch_rows, columns, targets, owners))
    token_scores = torch.empty(len(targets), dtype=torch.float64, device=device)
    token_hits = torch.empty(len(targets), dtype=torch.bool, device=device)
    step = max(1, LOG_SOFTMAX_ELEMENTS // logits.shape[-1])  # bounds the float32 copy of the picked logits
    for start in range(0, len(targets), step):
        part = slice(start, start + step)
        picked = logits[batch_rows[part], columns[part]].float()
        token_scores[part] = F.log_softmax(picked, dim=-1).gather(-1, targets[part, None]).squeeze(-1).double()
        token_hits[part] = picked.argmax(-1) == targets[part]
    scores = torch.zeros(len(requests), dtype=torch.float64, device=device).index_add_(0, owners, token_scores)
    misses = torch.zeros(len(requests), dtype=torch.long, device=device).index_add_(0, owners, (~token_hits).long())
    return {index: (score, miss == 0) for index, score, miss in zip(requests, scores.tolist(), misses.tolist(),
                                                                   strict=True)}


def _takes_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class SharedContextMixin:
    """Mixed into lm-eval's HFLM: `_loglikelihood_tokens` scores every choice of a context in one pass."""

    def _shared_context_usable(self) -> bool:
        config = getattr(self.model, "config", None)
        return (getattr(self, "backend", "causal") == "causal"
                and getattr(config, "_attn_implementation", "eager") in _MASKABLE)

    def _token_budget(self) -> tuple[int | None, int | None]:
        """(tokens per forward, rows per forward): a token budget for `auto`, else `batch_size` contexts."""
        size = getattr(self, "batch_size_per_gpu", "auto")
        if isinstance(size, int) or str(size).isdigit():
            return None, int(size)
        return (AUTO_TOKENS_CUDA if str(self.device).startswith("cuda") else AUTO_TOKENS_CPU), None

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not self._shared_context_usable():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        from tqdm import tqdm

        rows = pack_rows(requests, self.max_length)
        tokens, per_batch = self._token_budget()
        if override_bs:
            tokens, per_batch = None, override_bs
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        results: dict[int, tuple[float, bool]] = {}
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="ranked choices (shared context)")
        start = 0
        while start < len(rows):
            end = start + 1  # rows are longest first, so the first row sets the batch's width
            while end < len(rows) and (per_batch is None or end - start < per_batch) and \
                    (tokens is None or (end - start + 1) * rows[start]["length"] <= tokens):
                end += 1
            batch = rows[start:end]
            scored = score_packed(self.model, batch, pad_id)
            results.update(scored)
            bar.update(len(scored))
            start = end
        bar.close()
        ordered = [results[index] for index in range(len(requests))]
        for (cache_key, _, _), answer in zip(requests, ordered, strict=True):
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
        return ordered
