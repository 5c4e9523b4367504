"""The few errors edgecut raises on purpose.

Every error a user can cause (a bad file, a bad option, a missing backend) is an
``EdgecutError``: the CLI prints its message on one line and exits non-zero, without a
traceback. The message names the file or option at fault and says how to fix it.
"""

from __future__ import annotations

import os


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


class ModelError(EdgecutError):
    """A model or artifact cannot be built, loaded or used as asked."""


class MissingBackendError(EdgecutError):
    """An optional backend (OpenVINO, TensorRT, ...) is not installed."""
