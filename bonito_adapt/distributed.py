"""This process among those of an `accelerate launch` / torchrun launch (rank 0 of 1 when run alone).

The train and evaluate stages share accelerate's process state: one group for the whole launch,
NCCL with CUDA and gloo without (accelerate forms a multi-process CPU group only when told that
the processes run on CPUs). accelerate comes with the `train` and `eval` extras.
"""

from __future__ import annotations

__all__ = ["process_state"]


def process_state():
    """accelerate's `PartialState` for this launch (a singleton: every later Accelerator shares it)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
