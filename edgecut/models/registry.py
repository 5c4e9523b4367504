"""A registry for model builders, and nothing else.

A builder is a keyword-only function returning an ``nn.Module`` whose ``default_spec``
attribute (a :class:`~edgecut.artifact.ModelSpec`) says how to feed it. The registry only
maps names to builders; everything else is a plain function you call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from edgecut.errors import ModelError

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register ``fn`` under its own name."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def builder_options(name: str) -> dict[str, Any]:
    """The keyword options of a builder and their defaults."""
    fn = get_builder(name)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def get_builder(name: str) -> Callable[..., Any]:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(sorted(_BUILDERS))}") from None


def create_model(name: str, **kwargs: Any):
    """Build a registered architecture; unknown options are an error, not ignored."""
    fn = get_builder(name)
    allowed = builder_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ModelError(f"{name} has no option(s) {', '.join(unknown)}; options: {', '.join(allowed)}")
    try:
        return fn(**kwargs)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as e:  # an option of the wrong type or range
        raise ModelError(f"architecture {name} with options {kwargs} cannot be built: {e}") from None
