"""What ``compare`` is asked to do: :class:`CompareConfig`, the report step's config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison is measured against and called."""

    baseline: str | None = None  # a record name; None: the fp32 record with the most MACs, torch first
    title: str | None = None  # None: "edgecut benchmark report"
    overwrite: bool = False  # replace report files in out that edgecut did not write
