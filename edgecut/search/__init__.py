"""``edgecut optimize``: the fastest artifact for a target within an accuracy budget (see :mod:`.run`)."""

from edgecut.search.config import OptimizeConfig

__all__ = ["OptimizeConfig", "optimize"]


def __getattr__(name: str):
    if name == "optimize":
        from edgecut.search.run import optimize

        return optimize
    raise AttributeError(name)
