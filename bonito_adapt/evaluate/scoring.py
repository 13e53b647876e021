"""Ranked choice with every shared token run once: a token trie of the requests, scored in packed rows.

lm-eval's HFLM runs one forward per (example, choice): with EOS-terminated choices (the paper's
protocol) nothing is shared, so a long context is run once per choice, and the same document is run
again for every example that quotes it (ContractNLI asks 17 hypotheses about each whole NDA, under 5
templates, 3 of which start with the NDA).

Here the requests' contexts, sorted, form a trie: a context shares the tokens of its common prefix
with the context before it, and each context's answer choices hang off its last token. A row holds a
run of consecutive contexts in depth-first order (each context's tokens after that common prefix, then
its choices), with position ids = depth in the trie and an attention mask by which each token sees
exactly its ancestors: its context (shared prefix included) and, in a choice, that choice's earlier
tokens. In depth-first order the descendants of a token are the tokens after it up to the next one at
its depth or shallower, so the mask is `key <= query < subtree_end[key]`. One forward over a row gives
every choice's log-likelihood as separate forwards would (up to the numerics of another kernel shape).
Contexts with nothing in common simply share a row without seeing each other, so rows are also
padding-free packs of similar length.

`SharedContextMixin` overrides HFLM's `_loglikelihood_tokens` (the scoring of already-encoded
requests), so lm-eval's tasks, request building, metrics and caching stay its own. Models whose
attention cannot take an arbitrary mask (flash-attention kernels) keep HFLM's own path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SharedContextMixin", "PackedRow", "pack_rows", "score_packed", "subtree_ends"]

# `evaluate.batch_size: auto`: tokens per forward (rows x padded width) and per packed row. A longer row
# shares more of a long document, but its attention runs over the whole row (the mask is dense).
AUTO_TOKENS_CUDA = 16384
AUTO_TOKENS_CPU = 4096
ROW_TOKENS = 2048
LOG_SOFTMAX_ELEMENTS = 2**27  # choice tokens x vocabulary per float32 log-softmax (512 MiB)
_MASKABLE = ("sdpa", "eager")


@dataclass
class PackedRow:
    """One row of the trie: token ids, each token's depth (its position id), and per choice its request
    index, the row columns whose logits predict its tokens, and its token ids."""

    ids: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    choices: list[tuple[int, list[int], list[int]]] = field(default_factory=list)
    contexts: int = 0

    @property
    def length(self) -> int:
        return len(self.ids)


def _truncated(context: list[int], continuation: list[int], max_length: int) -> list[int]:
    """The context lm-eval's HFLM keeps: context + continuation cut from the left to max_length + 1 tokens."""
    whole = (context + continuation)[-(max_length + 1):]
    if len(continuation) >= len(whole):
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's {max_length}")
    return whole[: len(whole) - len(continuation)]


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


def pack_rows(requests: list[tuple[Any, list[int], list[int]]], max_length: int,
              row_tokens: int = ROW_TOKENS) -> list[PackedRow]:
    """The requests (cache key, context ids, continuation ids) as trie rows of at most `row_tokens` tokens
    (a context with its choices longer than that gets a row of its own), longest row first."""
    choices_of: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
    for index, (_, context, continuation) in enumerate(requests):
        choices_of[tuple(_truncated(list(context), list(continuation), max_length))].append((index, list(continuation)))
    rows: list[PackedRow] = []
    row = PackedRow()
    previous: tuple[int, ...] = ()
    path: list[int] = []  # the row columns of the previous context's tokens
    for context in sorted(choices_of):  # sorted: each context shares most with the one before it
        choices = choices_of[context]
        shared = _common_prefix(previous, context) if row.contexts else 0
        cost = len(context) - shared + sum(len(ids) for _, ids in choices)
        if row.contexts and row.length + cost > row_tokens:
            rows.append(row)
            row, shared, path = PackedRow(), 0, []
        path = path[:shared] + list(range(row.length, row.length + len(context) - shared))
        row.ids += context[shared:]
        row.depths += range(shared, len(context))
        for index, ids in choices:
            start = row.length
            row.ids += ids
            row.depths += range(len(context), len(context) + len(ids))
            row.choices.append((index, [path[-1], *range(start, start + len(ids) - 1)][: len(ids)], ids))
        row.contexts += 1
        previous = context
    if row.contexts:
        rows.append(row)
    return sorted(rows, key=lambda r: -r.length)


def subtree_ends(depths: list[int]) -> list[int]:
    """For each token of a depth-first row, the column where its subtree ends: the next token at its depth or
    shallower (or the row's end)."""
    ends = [len(depths)] * len(depths)
    open_tokens: list[int] = []
    for column, depth in enumerate(depths):
        while open_tokens and depths[open_tokens[-1]] >= depth:
            ends[open_tokens.pop()] = column
        open_tokens.append(column)
    return ends


def _batch_tensors(rows: list[PackedRow], pad_id: int, dtype, device):
    """input_ids, position_ids and the additive (rows, 1, T, T) trie mask of a batch of rows."""
    import torch

    width = max(row.length for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    ends = torch.arange(1, width + 1).repeat(len(rows), 1)  # padding: a subtree of its own, seen by nothing else
    for r, row in enumerate(rows):
        input_ids[r, : row.length] = torch.tensor(row.ids)
        positions[r, : row.length] = torch.tensor(row.depths)
        ends[r, : row.length] = torch.tensor(subtree_ends(row.depths))
    input_ids, positions, ends = input_ids.to(device), positions.to(device), ends.to(device)
    column = torch.arange(width, device=device)
    # allowed[r, query, key]: key is the query or one of its ancestors in the trie
    allowed = (column[None, None, :] <= column[None, :, None]) & (column[None, :, None] < ends[:, None, :])
    mask = torch.zeros((len(rows), 1, width, width), dtype=dtype, device=device)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return input_ids, positions, mask


def _model_dtype_and_device(model):
    import torch

    parameter = next(model.parameters())
    dtype = parameter.dtype if parameter.dtype.is_floating_point else torch.bfloat16
    return dtype, parameter.device


def _forward_picked_logits(model, input_ids, positions, mask, rows_index, columns):
    """The logits at (rows_index[i], columns[i]) only, shape (len(columns), vocabulary).

    The output layer runs on those hidden states alone (a pre-hook on it picks them), so no
    full-vocabulary logits are made for the rest of the row; a model without an output layer to hook
    makes them all and they are picked afterwards."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    picked_in_head = []

    def pick_hidden(module, args):
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[:2] != input_ids.shape:
            return None
        picked_in_head.append(True)
        return (hidden[rows_index, columns][None], *args[1:])

    handle = head.register_forward_pre_hook(pick_hidden) if isinstance(head, torch.nn.Module) else None
    try:
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    finally:
        if handle is not None:
            handle.remove()
    return logits[0] if picked_in_head else logits[rows_index, columns]


def score_packed(model, rows: list[PackedRow], pad_id: int) -> dict[int, tuple[float, bool]]:
    """(summed log-probability, is greedy) of every choice in `rows`, by request index; one forward."""
    import torch
    import torch.nn.functional as F

    dtype, device = _model_dtype_and_device(model)
    input_ids, positions, mask = _batch_tensors(rows, pad_id, dtype, device)
    # The logits needed: each choice's predicting columns, once per distinct (row, column).
    slot_of: dict[tuple[int, int], int] = {}
    requests, slots, targets, owners = [], [], [], []
    for r, row in enumerate(rows):
        for index, columns, ids in row.choices:
            owners += [len(requests)] * len(ids)
            requests.append(index)
            slots += [slot_of.setdefault((r, c), len(slot_of)) for c in columns]
            targets += ids
    rows_index = torch.tensor([r for r, _ in slot_of], device=device)
    columns = torch.tensor([c for _, c in slot_of], device=device)
    logits = _forward_picked_logits(model, input_ids, positions, mask, rows_index, columns)
    # Every choice token of the batch at once: its log-probability and whether it is the argmax, summed per
    # choice on the device (a loop per choice made two host syncs per choice).
    slots, targets, owners = (torch.tensor(values, device=device) for values in (slots, targets, owners))
    token_scores = torch.empty(len(targets), dtype=torch.float64, device=device)
    token_hits = torch.empty(len(targets), dtype=torch.bool, device=device)
    step = max(1, LOG_SOFTMAX_ELEMENTS // logits.shape[-1])  # bounds the float32 copy of the picked logits
    for start in range(0, len(targets), step):
        part = slice(start, start + step)
        picked = logits[slots[part]].float()
        token_scores[part] = F.log_softmax(picked, dim=-1).gather(-1, targets[part, None]).squeeze(-1).double()
        token_hits[part] = picked.argmax(-1) == targets[part]
    scores = torch.zeros(len(requests), dtype=torch.float64, device=device).index_add_(0, owners, token_scores)
    misses = torch.zeros(len(requests), dtype=torch.long, device=device).index_add_(0, owners, (~token_hits).long())
    return {index: (score, miss == 0) for index, score, miss in zip(requests, scores.tolist(), misses.tolist(),
                                                                   strict=True)}


def forward_batches(rows: list[PackedRow], tokens_per_forward: int) -> list[list[PackedRow]]:
    """Rows (longest first) grouped into forwards of at most `tokens_per_forward` rows x width (a row
    longer than that alone)."""
    batches, start = [], 0
    while start < len(rows):
        end = start + 1  # the first row of a batch sets its width
        while end < len(rows) and (end - start + 1) * rows[start].length <= tokens_per_forward:
            end += 1
        batches.append(rows[start:end])
        start = end
    return batches


class SharedContextMixin:
    """Mixed into lm-eval's HFLM: `_loglikelihood_tokens` scores the requests' trie in packed rows."""

    def _shared_context_usable(self) -> bool:
        config = getattr(self.model, "config", None)
        return (getattr(self, "backend", "causal") == "causal"
                and getattr(config, "_attn_implementation", "eager") in _MASKABLE)

    def _budgets(self, requests, override_bs: int | None) -> tuple[int, int]:
        """(tokens per forward, tokens per row). `auto`: fixed token budgets; an integer N: forwards no larger
        than N of the longest requests (context + choice), the memory N unpacked rows would take."""
        size = override_bs or getattr(self, "batch_size_per_gpu", "auto")
        if isinstance(size, int) or str(size).isdigit():
            longest = max(min(len(context) + len(continuation), self.max_length + 1)
                          for _, context, continuation in requests)
            tokens = int(size) * longest
            return tokens, min(ROW_TOKENS, tokens)
        return (AUTO_TOKENS_CUDA if str(self.device).startswith("cuda") else AUTO_TOKENS_CPU), ROW_TOKENS

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not self._shared_context_usable():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        if not requests:
            return []
        from tqdm import tqdm

        tokens_per_forward, row_tokens = self._budgets(requests, override_bs)
        rows = pack_rows(requests, self.max_length, row_tokens)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        results: dict[int, tuple[float, bool]] = {}
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="ranked choices (shared context)")
        for batch in forward_batches(rows, tokens_per_forward):
            scored = score_packed(self.model, batch, pad_id)
            results.update(scored)
            bar.update(len(scored))
        bar.close()
        ordered = [results[index] for index in range(len(requests))]
        for (cache_key, _, _), answer in zip(requests, ordered, strict=True):
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
        return ordered
