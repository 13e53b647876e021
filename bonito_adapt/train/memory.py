"""The memory plan of `train.gradient_checkpointing: auto`: how many decoder layers to checkpoint.

Checkpointing every layer keeps a 7B Q-LoRA run at ~8 GiB but recomputes each layer's forward in
backward (~1.6x slower on an H200). With room on the GPU the plan keeps the activations of as many
layers as fit and checkpoints only the rest. It is measured, not guessed: before the first step one
forward of a short sequence through the real model (adapter, attention kernel and Liger patches
included), with nothing checkpointed, records the bytes autograd keeps for backward, per decoder
layer and outside them (embeddings, final norm, logits and loss). Those scale with the tokens of a
forward (FlashAttention, SDPA and varlen attention keep O(tokens)), so the plan scales them to the
largest micro-batch the data can form and fits that, with the weights, gradients and optimizer
states, under the budget: `train.max_memory_gib`, else what the GPU has free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ActivationProfile", "MemoryPlan", "largest_forward_tokens", "measure_activations", "plan_layers",
           "decoder_layers", "apply_plan", "memory_plan_callback", "PROBE_TOKENS", "SAFETY"]

GIB = 2**30
PROBE_TOKENS = 256  # long enough that per-token costs dominate; short enough to fit beside any model
SAFETY = 0.9  # share of the budget the estimate may reach: allocator fragmentation and transient buffers
OPTIMIZER_BYTES_PER_PARAM = 8  # AdamW 32-bit: two fp32 moments per trainable parameter


@dataclass
class ActivationProfile:
    """Bytes autograd keeps for backward, per token of one forward, from the probe."""

    per_layer: list[float]  # each decoder layer's activations, not checkpointed
    layer_input: list[float]  # what a checkpointed layer keeps instead: its inputs
    outside: float  # embeddings, final norm, logits, loss
    probe_tokens: int


@dataclass
class MemoryPlan:
    layers: int
    checkpointed: int
    tokens_per_forward: int
    budget_gib: float
    static_gib: float
    estimated_peak_gib: float
    reason: str
    static_bytes: int
    profile: ActivationProfile

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decoder_layers(model) -> list:
    """The model's repeated blocks: the modules transformers' checkpointing wraps, in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


def largest_forward_tokens(lengths: Iterable[int], micro_batch: int, padding_free: bool, packing: bool,
                           max_length: int) -> int:
    """An upper bound on the tokens one forward can hold: the `micro_batch` longest examples together
    (padding-free), that many rows of the longest (padded), or full packed rows."""
    lengths = sorted(lengths, reverse=True)
    if packing:
        return micro_batch * max_length
    if padding_free:
        return sum(lengths[:micro_batch])
    return micro_batch * (lengths[0] if lengths else 0)


def measure_activations(model, vocab_size: int, tokens: int = PROBE_TOKENS) -> ActivationProfile:
    """One forward of `tokens` random ids with labels, nothing checkpointed, counting each distinct storage
    autograd saves (parameters excluded) against the decoder layer that saved it, or against `outside`."""
    import torch

    layers = decoder_layers(model)
    device = next(p.device for p in model.parameters())
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    parameter_storages |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: set[int] = set()
    per_layer = [0] * len(layers)
    layer_input = [0] * len(layers)
    outside = 0
    current: list[int] = []

    def pack(tensor):
        nonlocal outside
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer and pointer not in seen and pointer not in parameter_storages:
            seen.add(pointer)
            if current:
                per_layer[current[-1]] += storage.nbytes()
            else:
                outside += storage.nbytes()
        return tensor

    def enter(index):
        def hook(module, args, kwargs):
            current.append(index)
            # A checkpointed layer keeps the tensors it is called with (non-reentrant checkpointing saves the
            # inputs of the function it recomputes): the hidden states; the rotary tables are shared.
            for value in list(args) + list(kwargs.values()):
                if torch.is_tensor(value) and value.is_floating_point() and value.dim() >= 2 and \
                        value.shape[-1] == getattr(model.config, "hidden_size", value.shape[-1]):
                    layer_input[index] += value.untyped_storage().nbytes()
        return hook

    def leave(module, args, output):
        current.pop()

    flags = [layer.gradient_checkpointing for layer in layers]
    handles = []
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = False
        handles.append(layer.register_forward_pre_hook(enter(index), with_kwargs=True))
        handles.append(layer.register_forward_hook(leave))
    was_training = model.training
    model.train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (1, tokens), generator=generator).to(device)
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            output = model(input_ids=ids, labels=ids, use_cache=False)
        del output  # the graph, and everything it saved, goes with it
    finally:
        for handle in handles:
            handle.remove()
        for layer, flag in zip(layers, flags, strict=True):
            layer.gradient_checkpointing = flag
        model.train(was_training)
    return ActivationProfile(per_layer=[b / tokens for b in per_layer], layer_input=[b / tokens for b in layer_input],
                             outside=outside / tokens, probe_tokens=tokens)


def static_bytes(model) -> int:
    """Weights and buffers as stored (4-bit weights at their packed size), plus the trainable parameters'
    gradients and AdamW moments."""
    stored = sum(p.untyped_storage().nbytes() for p in {p.untyped_storage().data_ptr(): p for p in model.parameters()}.values())
    stored += sum(b.untyped_storage().nbytes() for b in model.buffers())
    trainable = [p for p in model.parameters() if p.requires_grad]
    return stored + sum(p.numel() * (p.element_size() + OPTIMIZER_BYTES_PER_PARAM) for p in trainable)


def plan_layers(profile: ActivationProfile, tokens: int, static: float, budget: float) -> MemoryPlan:
    """Checkpoint as few layers as fit: layers are left whole from the last one down while the estimated peak
    (static + kept activations + the recompute of one layer in backward) stays under SAFETY x budget."""
    count = len(profile.per_layer)
    # Checkpointed layers keep their inputs; one layer at a time is recomputed in backward.
    kept = [profile.layer_input[i] * tokens for i in range(count)]
    extra = [max(0.0, (profile.per_layer[i] - profile.layer_input[i]) * tokens) for i in range(count)]
    base = static + profile.outside * tokens + sum(kept) + max(profile.per_layer, default=0.0) * tokens
    limit = SAFETY * budget
    whole = 0
    peak = base
    while whole < count and peak + extra[count - 1 - whole] <= limit:
        peak += extra[count - 1 - whole]
        whole += 1
    if whole == count:
        peak -= max(profile.per_layer, default=0.0) * tokens  # nothing is recomputed
        reason = "everything fits: no layer checkpointed"
    elif whole == 0:
        reason = ("even with every layer checkpointed the estimate is over the budget; lower train.micro_batch_size "
                  "if memory runs out" if peak > limit else "only with every layer checkpointed")
    else:
        reason = f"{count - whole} of {count} layers checkpointed to stay under the budget"
    return MemoryPlan(layers=count, checkpointed=count - whole, tokens_per_forward=tokens,
                      budget_gib=round(budget / GIB, 2), static_gib=round(static / GIB, 2),
                      estimated_peak_gib=round(peak / GIB, 2), reason=reason, static_bytes=int(static),
                      profile=profile)


def apply_plan(model, plan: MemoryPlan) -> None:
    """Checkpoint the first `plan.checkpointed` layers (their inputs are small); keep the rest whole."""
    for index, layer in enumerate(decoder_layers(model)):
        layer.gradient_checkpointing = index < plan.checkpointed


def device_budget(max_memory_gib: float | None, cuda: bool) -> float | None:
    """Bytes the run may use: the cap, bounded by what this GPU can give this process (free + already ours)."""
    if not cuda:
        return None if max_memory_gib is None else max_memory_gib * GIB
    import torch

    free, _total = torch.cuda.mem_get_info()
    available = free + torch.cuda.memory_reserved()
    return available if max_memory_gib is None else min(available, max_memory_gib * GIB)


def memory_plan_callback(max_memory_gib: float | None, cuda: bool, report):
    """A TrainerCallback that, once the Trainer has turned checkpointing on for every layer, measures and
    applies the plan, keeps it as `.plan` and calls `report(plan)`. Set before training: `tokens_per_forward`
    (largest_forward_tokens), `autocast` (the Trainer's autocast context, so the probe runs in the training
    precision) and `sharded` (FSDP/DeepSpeed: parameters are not whole on one process, so no probe)."""
    from transformers import TrainerCallback

    class MemoryPlanner(TrainerCallback):
        tokens_per_forward = 0
        autocast = None
        sharded = False
        plan: MemoryPlan | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            budget = device_budget(max_memory_gib, cuda)
            layers = decoder_layers(model)
            if budget is None or not layers or self.sharded or not self.tokens_per_forward:
                return  # on CPU without a cap (a laptop), or sharded: every layer stays checkpointed
            vocab = model.get_input_embeddings().num_embeddings
            probe = min(PROBE_TOKENS, self.tokens_per_forward)
            if self.autocast is not None:
                with self.autocast():
                    profile = measure_activations(model, vocab, probe)
            else:
                profile = measure_activations(model, vocab, probe)
            static = static_bytes(model)
            if cuda:
                import torch

                trainable = sum(p.numel() * (p.element_size() + OPTIMIZER_BYTES_PER_PARAM)
                                for p in model.parameters() if p.requires_grad)
                static = max(static, torch.cuda.memory_allocated() + trainable)
            self.plan = plan_layers(profile, self.tokens_per_forward, static, budget)
            apply_plan(model, self.plan)
            report(self.plan)

    return MemoryPlanner()
