"""The one exception type that reaches the user as a single line (exit code 2)."""

from __future__ import annotations

__all__ = ["UserError", "missing_extra"]


class UserError(Exception):
    """A problem in the user's input that they can fix.

    The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
    Messages name the field or file at fault and say how to fix it.
    """


def missing_extra(package: str, extra: str) -> UserError:
    """The error for an optional dependency that is not installed."""
    return UserError(
        f"{package} is not installed; install it with `pip install 'bonito_adapt[{extra}]'`"
    )
