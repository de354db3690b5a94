"""Exceptions with messages an artist can act on.

Every error raised for bad input names the input, the value that was given and
the fix, so a ComfyUI user sees "what to change" instead of a library traceback.
"""

from __future__ import annotations


class AvatarCascadeError(Exception):
    """Base class of every error this pack raises on purpose."""


class InputError(AvatarCascadeError, ValueError):
    """A bad input value: names the input, the value and the fix."""

    def __init__(self, input_name: str, value: object, problem: str, fix: str) -> None:
        self.input_name = input_name
        self.value = value
        self.problem = problem
        self.fix = fix
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"{input_name} = {shown}: {problem}. Fix: {fix}")


class ModelFileError(AvatarCascadeError, ValueError):
    """A model file that is missing, unsafe, truncated or of the wrong kind."""

    def __init__(self, input_name: str, path: object, problem: str, fix: str) -> None:
        self.input_name = input_name
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{input_name} = {str(path)!r}: {problem}. Fix: {fix}")


class Interrupted(AvatarCascadeError):
    """The user stopped the run; finished work has been kept."""
