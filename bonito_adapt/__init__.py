"""bonito_adapt: adapt a language model to your own unannotated text, end to end.

`from bonito_adapt import Bonito` gives the original bonito package's API on any engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .generate.task_format import TASK_TYPES, bonito_prompt, parse_bonito_output

__version__ = "0.1.0"
__all__ = ["Bonito", "TASK_TYPES", "bonito_prompt", "parse_bonito_output", "__version__"]

if TYPE_CHECKING:
    from .bonito import Bonito


def __getattr__(name: str):
    # Bonito pulls in torch/datasets; import it only when asked for.
    if name == "Bonito":
        from .bonito import Bonito

        return Bonito
    raise AttributeError(f"module 'bonito_adapt' has no attribute {name!r}")
