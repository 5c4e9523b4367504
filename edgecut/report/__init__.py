"""Reports made from bench records: a comparison table (md, csv, html) and a Pareto plot
(:func:`~edgecut.report.compare.compare`)."""

from edgecut.report.compare import CompareResult, compare, load
from edgecut.report.config import CompareConfig
from edgecut.report.render import to_csv, to_markdown
from edgecut.report.table import Column, Report, Row, build_report, choose_baseline

__all__ = ["compare", "CompareConfig", "CompareResult", "Column", "Report", "Row", "build_report", "choose_baseline",
           "load", "to_csv", "to_markdown"]
