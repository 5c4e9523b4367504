"""The few errors edgecut raises on purpose.

Every error a user can cause (a bad file, a bad option, a missing backend) is an
``EdgecutError``: the CLI prints its message on one line and exits non-zero, without a
traceback. The message names the file or option at fault and says how to fix it.
"""

from __future__ import annotations

import os


class DataWarning(UserWarning):
    """Something about the user's data that edgecut handled, and that the user should know."""


class EdgecutError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class InputError(EdgecutError):
    """A file the user gave is missing, unreadable, corrupt or of the wrong shape."""

    def __init__(self, path: str | os.PathLike | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path else ""
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{where}{problem}{hint}")


class UnsafeFileError(InputError):
    """A file would run code or escape its folder if loaded; it was refused unread."""


class OutputError(EdgecutError):
    """A file or folder could not be written (read-only, no space, a file in the way, ...)."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = "") -> None:
        self.path = os.fspath(path)
        hint = f" ({fix})" if fix else ""
        super().__init__(f"{self.path}: cannot write: {problem}{hint}")


class ModelError(EdgecutError):
    """A model or artifact cannot be built, loaded or used as asked."""


class NonFiniteOutput(ModelError):
    """A model produced NaN or infinite values (broken weights, or a spec that divides by zero)."""


class MissingBackendError(EdgecutError):
    """An optional backend (OpenVINO, TensorRT, ...) is not installed."""
