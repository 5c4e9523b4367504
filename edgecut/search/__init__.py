"""``edgecut optimize``: the fastest artifact for a target within an accuracy budget (see :mod:`.optimize`)."""

from edgecut.search.config import OptimizeConfig
from edgecut.search.optimize import optimize

__all__ = ["OptimizeConfig", "optimize"]
