"""Stage `generate`: unannotated text -> passages -> Bonito (or prompted) tasks.

Parts: `config` (the recipe section), `corpus` (documents and passages), `task_format` (Bonito's
prompt and parser, and the `prompted` style in `prompted`), `shards` (generation in resumable
shards, one process or several), `stage` (the entry point `run`).
"""

from .stage import run

__all__ = ["run"]
