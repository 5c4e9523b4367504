"""``edgecut optimize``: the fastest artifact for a target within an accuracy budget (see :mod:`.run`)."""

from edgecut.search.config import OptimizeConfig
from edgecut.search.run import optimize

__all__ = ["OptimizeConfig", "optimize"]
