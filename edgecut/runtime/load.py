"""``load``: a Runner for an artifact (or a bare ``.onnx`` / ``.ort`` / OpenVINO ``.xml`` edgecut wrote),
its class found in the format table and imported only then."""

from __future__ import annotations

import os
from pathlib import Path

from edgecut._optional import load as load_ref
from edgecut.artifact import Artifact, load_artifact
from edgecut.formats import FORMATS
from edgecut.runtime.base import Runner, backend_for

BARE_FILES = {".onnx": "onnx", ".ort": "ort", ".xml": "openvino"}  # a model file that carries its own spec


def load(artifact: Artifact | str | os.PathLike, device: str = "cpu", threads: int | None = None,
         backend: str | None = None) -> Runner:
    """A Runner for ``artifact`` on ``device``; the backend follows the artifact's format.

    A bare ``.onnx`` or ``.ort`` file written by edgecut (its spec in its metadata) also loads, and so
    does a bare OpenVINO ``.xml`` (its spec in ``rt_info``, its ``.bin`` beside it)."""
    path = Path(artifact) if not isinstance(artifact, Artifact) else None
    if path is not None and path.suffix in BARE_FILES and path.is_file():
        return load_ref(FORMATS[BARE_FILES[path.suffix]].runner)(path, device=device, threads=threads)
    art = artifact if isinstance(artifact, Artifact) else load_artifact(path)
    backend_for(art, backend)  # refuses a format nothing here runs, or another backend than its own
    return load_ref(FORMATS[art.manifest.format].runner).from_artifact(art, device=device, threads=threads)
