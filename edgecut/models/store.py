"""Saving and loading torch models as artifacts, and loading a user's own model.

A torch artifact is ``model.safetensors`` plus the architecture in ``edgecut.json``: a registry name, or a user's own
class (``class_path``: ``package.module:Class``, or ``/path/file.py:Class`` with the file's sha256, re-imported from
there on every load and refused if it changed), its keyword options, the channel counts pruning changed, and which of
several outputs to read (``output``: a tuple index or dict key, and/or one channel). Modules are never pickled. A
model comes in as an edgecut artifact directory (torch, TorchScript or torch.export program); a weights file
(``.safetensors``, or a ``.pt``/``.pth`` state dict read with ``weights_only=True``) plus an architecture name and
options; or a TorchScript file, read by TorchScript's own loader. ``edgecut import`` (:mod:`edgecut.intake`) writes
artifacts from everything a user may hold.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import pickle
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecut import io
from edgecut.artifact import MANIFEST, Artifact, Manifest, ModelSpec, Step, is_artifact, load_artifact, write_artifact
from edgecut.batches import in_batches_of
from edgecut.errors import InputError, ModelError
from edgecut.models.profile import count_macs, count_params
from edgecut.models.registry import create_model

WEIGHTS_FILE = "model.safetensors"
USER_MODULES = "edgecut_user"  # sys.modules prefix of classes imported from a user's file


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
    if arch.get("class_path"):
        cls = user_class(arch["class_path"], arch.get("class_sha256"))
        try:
            module = cls(**kwargs)
        except Exception as e:  # the user's constructor: anything may go wrong in it
            raise ModelError(f"{arch['class_path']} with options {kwargs} cannot be built: "
                             f"{type(e).__name__}: {io.first_line(e)}") from None
        if not isinstance(module, nn.Module):
            raise ModelError(f"{arch['class_path']} built a {type(module).__name__}, not a torch.nn.Module")
    else:
        module = create_model(arch["name"], **kwargs)  # a bad option's type or range is one ModelError
    if arch.get("channels"):
        from edgecut.models.channels import apply_channels

        try:
            apply_channels(module, arch["channels"])
        except (TypeError, ValueError, KeyError, RuntimeError) as e:  # counts of the wrong type or sign
            raise ModelError(f"the channel configuration {str(arch['channels'])[:200]} cannot be applied: "
                             f"{type(e).__name__}: {io.first_line(e)}") from None
    if arch.get("output"):
        select_output(module, arch["output"])
    return module


# ---------------------------------------------------------------------------- a user's class


def parse_class_path(class_path: str) -> tuple[str, str, bool]:
    """``"pkg.mod:Class"`` or ``"path/file.py:Class"`` -> (module or file, qualified name, is a file)."""
    where, sep, name = class_path.rpartition(":")
    if not sep or not where or not name or not all(part.isidentifier() for part in name.split(".")):
        raise InputError(class_path, "is no class path", "write package.module:ClassName or path/to/file.py:ClassName")
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    return where, name, is_file


def user_class(class_path: str, sha256: str | None = None) -> Callable[..., nn.Module]:
    """The class (or builder function, e.g. torchvision's ``lraspp_mobilenet_v3_large``) ``class_path``
    names: imported from its package, or executed from its file (whose sha256, when given, must
    still match: the class the weights were saved from)."""
    where, name, is_file = parse_class_path(class_path)
    if is_file:
        path = Path(where)
        if not path.is_file():
            raise InputError(path, "the file defining the model's class is not there",
                             "put it back, or import the model again (edgecut import ... --class FILE:CLASS)")
        digest = io.sha256_file(path)
        if sha256 is not None and digest != sha256:
            raise InputError(path, f"changed since the model was imported (sha256 {digest[:12]}..., recorded "
                             f"{sha256[:12]}...): the class may no longer fit the weights",
                             "restore the file, or import the model again with edgecut import")
        module = _module_from_file(path, digest)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or anything the module runs when imported
            raise ModelError(f"cannot import {where} for {class_path}: {type(e).__name__}: {io.first_line(e)}; "
                             "install it, or give the file: --class path/to/file.py:ClassName") from None
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelError(f"{where} defines no {name!r} (for {class_path})")
    if isinstance(obj, type) and not issubclass(obj, nn.Module) or not callable(obj):
        raise ModelError(f"{class_path} is not a torch.nn.Module class (or a function that builds one)")
    return obj


def _module_from_file(path: Path, digest: str):
    key = f"{USER_MODULES}.{path.stem}_{digest[:16]}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise InputError(path, "cannot be imported as Python", "give a .py file that defines the class")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # its own imports of files beside it
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[key]
        raise ModelError(f"{path}: importing it failed: {type(e).__name__}: {io.first_line(e)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def class_path_of(cls: type) -> str:
    """The class path that re-imports ``cls``: its module, or its file when it was loaded from one."""
    module = sys.modules.get(cls.__module__)
    if "<locals>" in cls.__qualname__:
        raise ModelError(f"{cls.__qualname__} is defined inside a function, where nothing can import it again: "
                         "define the class at the top of a module file")
    if cls.__module__ == "__main__":
        raise ModelError(f"{cls.__qualname__} is defined in the script being run (__main__), which importing it "
                         "again would run: move the class into a module file and import it from there")
    if module is None:
        raise ModelError(f"{cls.__qualname__}'s module {cls.__module__!r} was not imported by name, so nothing can "
                         "import it again: import the module normally, or give its file as class_path")
    if cls.__module__.startswith(USER_MODULES + "."):
        return f"{Path(module.__file__).resolve()}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


# ---------------------------------------------------------------------------- one of several outputs


_SELECTED: dict[tuple[type, str], type] = {}


def pick_output(out: Any, output: dict[str, Any]) -> Any:
    """The output ``output`` selects from what a forward returned (a tuple index or dict key, then a channel)."""
    if "index" in output:
        out = out[int(output["index"])]
    elif "key" in output:
        out = out[output["key"]]
    if "channel" in output:
        c = int(output["channel"])
        out = out[:, c:c + 1]
    return out


def select_output(module: nn.Module, output: dict[str, Any]) -> nn.Module:
    """Make ``module`` return only the selected output: its class becomes a subclass whose forward
    picks it, so its layers, names and state-dict keys stay exactly as they were (pruning and
    loading see the same model)."""
    base = type(module)
    if getattr(base, "edgecut_output", None) is not None:
        base = base.__mro__[1]
    key = (base, json.dumps(output, sort_keys=True))
    sub = _SELECTED.get(key)
    if sub is None:
        def forward(self, *args, **kwargs):
            return pick_output(base.forward(self, *args, **kwargs), output)

        sub = type(base.__name__, (base,), {"forward": forward, "edgecut_output": dict(output),
                                            "__module__": base.__module__, "__qualname__": base.__qualname__})
        _SELECTED[key] = sub
    module.__class__ = sub
    return module


# ---------------------------------------------------------------------------- torch.export programs


@contextlib.contextmanager
def _no_unpickling(path: Path):
    """torch.export.load reads tensors with torch.load and falls back to pickle for other objects:
    within this block torch.load reads weights only and pickle refuses, so a program that needs
    more is refused, never run."""
    real_load, real_loads = torch.load, pickle.loads

    def weights_only(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    def refuse(*_a, **_k):
        raise pickle.UnpicklingError("pickled objects refused")

    torch.load, pickle.loads = weights_only, refuse
    try:
        yield
    except pickle.UnpicklingError:  # torch's own text suggests weights_only=False: not advice to pass on
        from edgecut.errors import UnsafeFileError

        raise UnsafeFileError(path, "refused: the program holds pickled objects, which could run code when read",
                              "export it again with plain tensors only, or give its state dict and class") from None
    finally:
        torch.load, pickle.loads = real_load, real_loads


class Program(nn.Module):
    """A torch.export program as a module: its graph ran as exported (train/eval do not reach it),
    image by image when it was exported for one batch size."""

    def __init__(self, inner: nn.Module, fixed_batch: int | None) -> None:
        super().__init__()
        self.inner = inner
        self.fixed_batch = fixed_batch

    def train(self, mode: bool = True) -> Program:
        self.training = mode  # the program's graph is fixed at export: nothing to switch
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return in_batches_of(self.inner, x, self.fixed_batch, cat=torch.cat)


def program_input_shape(program) -> list[int | None]:
    """The first user input's shape of an ExportedProgram, None where a dimension is dynamic."""
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    return [d if isinstance(d, int) else None for d in node.meta["val"].shape]


@contextlib.contextmanager
def _kept_log(name: str):
    """The records logger ``name`` emits in the block, kept instead of printed: torch.export logs
    the whole traceback of a failed read as a warning, before the error edgecut makes of it."""
    import logging

    logger, records = logging.getLogger(name), []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    saved = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [Keep()], False
    try:
        yield records
    finally:
        logger.handlers, logger.propagate = saved


def read_program(path: Path):
    """The ExportedProgram in ``path``, read without unpickling anything (and without torch's
    logged traceback: its cause is in the one error)."""
    if not zipfile.is_zipfile(path):
        raise InputError(path, "not a torch.export program (.pt2 zip archive)", "save it with torch.export.save")
    try:
        with _kept_log("torch.export") as records, _no_unpickling(path):
            program = torch.export.load(str(path))
    except InputError:
        raise
    except Exception as e:  # the deserialiser raises many kinds on junk or version skew
        causes = [r.exc_info[1] for r in records if r.exc_info and r.exc_info[1] is not None]
        cause = causes[0] if causes else e
        why = io.first_line(cause, 300).split(". ")[0].rstrip(".")  # torch adds sentences of general advice
        raise InputError(path, f"not a readable torch.export program ({type(cause).__name__}: {why})",
                         "save it with torch.export.save from this torch version") from None
    return program


def load_program(path: Path) -> nn.Module:
    """A torch.export program (``.pt2``) as a runnable module (run image by image when its batch is fixed)."""
    program = read_program(path)
    return Program(program.module(), program_input_shape(program)[0])


def is_program(path: Path) -> bool:
    """Whether ``path`` is a torch.export archive (it holds serialized_exported_program.json or a models/ entry)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return any(n.endswith("serialized_exported_program.json") or "/models/" in n and n.endswith(".json")
               for n in names)


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
    if is_torchscript(source):
        return LoadedModel(load_torchscript(source).eval(), spec or ModelSpec(), None)
    if source.suffix.lower() in (".onnx", ".pt2") or is_program(source):
        raise InputError(source, "a model file edgecut reads as an artifact",
                         f"import it first: edgecut import {source} --out DIR, then give DIR")
    if arch is None:
        raise InputError(source, "a weights file needs its architecture",
                         f"import it with its class first: edgecut import {source} --class file.py:ClassName "
                         "--out DIR (or --arch NAME), then give DIR")
    arch_d = {"name": arch, "kwargs": dict(arch_kwargs or {})}
    module = build(arch_d, pretrained=False)
    load_state(module, io.load_weights(source), source)
    return LoadedModel(module.eval(), spec or getattr(module, "default_spec", ModelSpec()), arch_d)


def _from_artifact(art: Artifact) -> LoadedModel:
    m = art.manifest
    if m.format == "torchscript":
        return LoadedModel(load_torchscript(art.model_path).eval(), m.spec, None, art)
    if m.format == "pt2":
        return LoadedModel(load_program(art.model_path), m.spec, None, art)
    if m.format == "classical":
        raise ModelError(f"{art.path} is a classical baseline ({m.metrics.get('classical', {}).get('method')}), not a "
                         "network: it has no layers to train, prune or distill from; bench, eval or remove it")
    if m.format != "torch" or m.arch is None:
        raise ModelError(f"{art.path}: a {m.format} artifact is not a torch model; "
                         "run it through a Runner (edgecut.runtime.load) instead")
    state = None if art.model_path.suffix == ".safetensors" else io.load_weights(art.model_path)
    module = build_fitting(m.arch, art.model_path, art.path / MANIFEST, state)
    load_state(module, io.load_weights(art.model_path) if state is None else state, art.model_path)
    return LoadedModel(module.eval(), m.spec, m.arch, art)


def weight_shapes(path: Path, state: dict[str, torch.Tensor] | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a weights file: a safetensors file's header alone (nothing loaded),
    or the shapes of ``state``, the file already read."""
    from edgecut.parsing import safetensors_shapes

    if state is not None:
        return {k: tuple(v.shape) for k, v in state.items()}
    try:
        return safetensors_shapes(path)
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None


def build_fitting(arch: dict[str, Any], weights: Path, manifest: Path,
                  state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """``build(arch)``, once the same build on the meta device (shapes, no memory) has every tensor
    of the weights file at its shape: an ``arch`` that edgecut.json's sha256 entries do not cover
    (``{"width": 1000000000}``) is refused naming the field, before anything is allocated."""
    import warnings

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a probe: what torch says of odd sizes is said again by the real build
            probe = build(arch, pretrained=False)
    except (ModelError, InputError) as e:
        if arch.get("class_path"):  # a user's class that cannot be built on the meta device: checked after the build
            return build(arch, pretrained=False)
        raise InputError(manifest, f"arch: {e}", "restore edgecut.json, or re-create the artifact") from None
    own = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    stored = weight_shapes(weights, state)
    if own.keys() == stored.keys() and own == stored:
        return build(arch, pretrained=False)
    bad = [k for k in own if k in stored and own[k] != stored[k]]
    layers = {k.rsplit(".", 1)[0] for k in bad}
    fields = [f"arch.channels.{n}" for n in (arch.get("channels") or {}) if n in layers] or ["arch.kwargs"]
    if bad:
        k = bad[0]
        what = f"{k} is {stored[k]} in {weights.name} but {own[k]} as the arch builds it"
        if len(bad) > 1:
            what += f" ({len(bad) - 1} more tensor(s) differ)"
    else:
        what = f"{weights.name} and the arch name different tensors ({key_diff(_shaped(own), _shaped(stored))})"
    raise InputError(manifest, f"{', '.join(fields[:3])} ({json.dumps(arch.get('kwargs', {}), default=str)[:200]}) "
                     f"does not fit the weights: {what}", "restore edgecut.json, or re-create the artifact")


def _shaped(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Meta tensors of these shapes (for :func:`key_diff`'s words; nothing is allocated)."""
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """TorchScript's own loader, with one clear error for a file that is not TorchScript."""
    import warnings

    try:
        with warnings.catch_warnings():  # its deprecation notice, once per load
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # RuntimeError for junk, ValueError / zipfile errors for other archives
        raise InputError(path, f"not a readable TorchScript file ({io.first_line(e)})",
                         "save the model with torch.jit.save, or give its artifact") from None


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path,
                fix: str = "check --arch and its options (width, depth, ...)") -> None:
    own = module.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel / DDP
    problem = key_diff(own, state)
    if problem:
        raise InputError(path, f"weights do not fit the architecture: {problem}", fix)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise InputError(path, f"weights do not fit the architecture: {' '.join(lines[1:3])[:300]}", fix) from None


def key_diff(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into a module whose state dict is ``own``, in words ('' if nothing)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} key(s) missing from the file (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in it (first: {', '.join(unexpected[:3])})")
    for k in shapes[:2]:
        parts.append(f"{k} is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model")
    if len(shapes) > 2:
        parts.append(f"{len(shapes) - 2} more shape mismatch(es)")
    return "; ".join(parts)


def is_torchscript(path: Path) -> bool:
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
