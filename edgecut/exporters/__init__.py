"""Exporters: one function per format (its row in :mod:`edgecut.formats` names it), the export front
function (:mod:`edgecut.exporters.export`) and the parity check against the parent."""

from edgecut.exporters.export import export, manifest_for
from edgecut.exporters.config import (CALIB_METHODS, PRECISIONS, CalibConfig, ExportConfig, Exported, LiteRTOptions,
                                       OnnxOptions, OpenVinoOptions, ParityConfig, TensorRTOptions)
from edgecut.formats import EXPORT_FORMATS as FORMATS

__all__ = ["FORMATS", "PRECISIONS", "CALIB_METHODS", "CalibConfig", "ParityConfig", "OnnxOptions", "OpenVinoOptions",
           "TensorRTOptions", "LiteRTOptions", "ExportConfig", "Exported", "export", "manifest_for"]
