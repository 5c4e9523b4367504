"""Saving and loading torch models as artifacts, and loading a user's own model.

A torch artifact is ``model.safetensors`` plus the architecture (registry name and keyword
options) in ``edgecut.json``; modules are never pickled. A user's model comes in as one of:

- an edgecut artifact directory;
- a weights file (``.safetensors``, or a ``.pt``/``.pth`` state dict read with
  ``weights_only=True``) plus an architecture name and options;
- a TorchScript file, read by TorchScript's own loader.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecut import io
from edgecut.artifact import Artifact, Manifest, ModelSpec, Step, is_artifact, load_artifact, write_artifact
from edgecut.errors import InputError, ModelError
from edgecut.models.profile import count_macs, count_params
from edgecut.models.registry import create_model

WEIGHTS_FILE = "model.safetensors"


@dataclass
class LoadedModel:
    module: nn.Module
    spec: ModelSpec
    arch: dict[str, Any] | None  # {"name", "kwargs"} when built from the registry
    artifact: Artifact | None = None  # set when loaded from an artifact directory


def build(arch: dict[str, Any], pretrained: bool = True) -> nn.Module:
    """The module an architecture description names: registry name, options and, for a
    pruned model, the channel configuration (models/channels.py). ``pretrained=False``
    skips ImageNet backbone weights (``weights_backbone``): for models whose trained
    weights are loaded next, so a saved student loads where the ImageNet file is absent."""
    kwargs = dict(arch.get("kwargs", {}))
    if not pretrained and kwargs.get("weights_backbone") is not None:
        kwargs["weights_backbone"] = None
    try:
        module = create_model(arch["name"], **kwargs)
    except (TypeError, ValueError, ZeroDivisionError) as e:  # an option of the wrong type or range
        raise ModelError(f"architecture {arch['name']} with options {kwargs} cannot be built: {io.first_line(e)}") \
            from None
    if arch.get("channels"):
        from edgecut.models.channels import apply_channels

        apply_channels(module, arch["channels"])
    return module


def load_model(source: Artifact | str | os.PathLike, arch: str | None = None,
               arch_kwargs: dict[str, Any] | None = None, spec: ModelSpec | None = None) -> LoadedModel:
    """Load an artifact, weights + architecture name, or a TorchScript file, in eval mode."""
    if isinstance(source, Artifact):
        return _from_artifact(source)
    source = Path(source)
    if is_artifact(source):
        return _from_artifact(load_artifact(source))
    if source.is_dir():
        raise InputError(source, "folder holds no edgecut.json", "give an artifact directory or a weights file")
    if not source.is_file():
        raise InputError(source, "model not found")
    if _is_torchscript(source):
        return LoadedModel(_torchscript(source).eval(), spec or ModelSpec(), None)
    if arch is None:
        raise InputError(source, "a weights file needs its architecture",
                         "pass --arch NAME (see 'edgecut info --list-archs') or give an artifact directory")
    arch_d = {"name": arch, "kwargs": dict(arch_kwargs or {})}
    module = build(arch_d, pretrained=False)
    _load_state(module, io.load_weights(source), source)
    return LoadedModel(module.eval(), spec or getattr(module, "default_spec", ModelSpec()), arch_d)


def _from_artifact(art: Artifact) -> LoadedModel:
    m = art.manifest
    if m.format == "torchscript":
        return LoadedModel(_torchscript(art.model_path).eval(), m.spec, None, art)
    if m.format != "torch" or m.arch is None:
        raise ModelError(f"{art.path}: a {m.format} artifact is not a torch model; "
                         "run it through a Runner (edgecut.runtime.load) instead")
    module = build(m.arch, pretrained=False)
    _load_state(module, io.load_weights(art.model_path), art.model_path)
    return LoadedModel(module.eval(), m.spec, m.arch, art)


def _torchscript(path: Path) -> torch.jit.ScriptModule:
    """TorchScript's own loader, with one clear error for a file that is not TorchScript."""
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # RuntimeError for junk, ValueError / zipfile errors for other archives
        raise InputError(path, f"not a readable TorchScript file ({io.first_line(e)})",
                         "save the model with torch.jit.save, or give its artifact") from None


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise InputError(path, f"weights do not fit the architecture: {' '.join(lines[1:3])[:300]}",
                         "check --arch and its options (width, depth, ...)") from None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:  # is_zipfile reads only the end record; the directory it points to may still be junk
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(path, f"corrupt zip archive ({type(e).__name__}: {io.first_line(e)})",
                         "save the model again, or copy it again") from None
    return any(n.split("/", 2)[1:2] == ["code"] for n in names)


def save_model(out: str | os.PathLike, module: nn.Module, arch: dict[str, Any], spec: ModelSpec,
               lineage: Sequence[Step] = (), metrics: dict[str, Any] | None = None) -> Artifact:
    """Write a torch model as an artifact: safetensors weights + architecture + manifest."""
    state = {k: v for k, v in module.state_dict().items()}
    manifest = Manifest(
        format="torch", precision="fp32", model_file=WEIGHTS_FILE, arch=arch, spec=spec,
        params=count_params(module), macs=count_macs(module, spec.input_size),
        lineage=list(lineage), metrics=metrics or {},
    )
    data = io.save_weights(Path(out) / f".{WEIGHTS_FILE}.staged", state)
    return write_artifact(out, manifest, {WEIGHTS_FILE: data})
