"""The in-process transformers engine: `engine.py` (batching, compiled decode over a static KV cache),
`decode_attention.py` (one-token decode steps that read only the cache blocks a row uses) and
`nucleus.py` (temperature and top-p with a cheaper sort)."""

from .engine import TransformersEngine

__all__ = ["TransformersEngine"]
