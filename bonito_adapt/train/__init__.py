"""Stage `train`: (Q-)LoRA adaptation of the target model on the generated tasks.

Parts: `config` (the recipe section), `data` (sources, fingerprints, mixing, the training
format), `trainer` (the setup this machine resolves to, TRL's SFTTrainer, adapters and
checkpoints), `varlen` (padding-free attention through PyTorch's varlen kernel), `stage` (`run`).
"""

from .stage import run

__all__ = ["run"]
