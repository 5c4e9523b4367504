"""``import_model``: the model a user has, as an edgecut artifact every stage can read.

In: a state dict (``.pth`` / ``.pt`` read with ``weights_only=True``, or ``.safetensors``) plus a registered
``arch`` or the user's own ``nn.Module`` class (``class_path``, ``kwargs``), which becomes a torch artifact that
records how to rebuild it; a TorchScript file, a ``torch.export`` program (``.pt2``) or an ONNX file, which becomes
an artifact of that format; in Python, an ``nn.Module`` object. A model with several outputs is told which one is
the mask (``output_index`` / ``output_key`` / ``output_channel``). The spec is never silently defaulted: each field
is given, read from the file, measured, or the architecture's default, and ``metrics["import"]["spec_source"]``
says which. The model is run on a few images before anything is written; a spec the numbers contradict is refused
with them (``force`` keeps the warning).

In full: docs/design-decisions.md#import
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from edgecut import io
from edgecut.artifact import (Artifact, Manifest, ModelSpec, Step, first_error, is_artifact, load_artifact,
                              tool_versions, write_artifact)
from edgecut.errors import EdgecutError, InputError, ModelError
from edgecut.intake.config import SPEC_FIELDS, ImportConfig
from edgecut.models.profile import count_macs, count_params
from edgecut.models.store import (Program, build, class_path_of, is_program, is_torchscript, key_diff, load_state,
                                  load_torchscript, parse_class_path, pick_output, program_input_shape, read_program,
                                  save_model)

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin", ".ckpt")
FILES = {"torchscript": "model.ts", "pt2": "model.pt2", "onnx": "model.onnx"}


class _Select(nn.Module):
    """``inner`` returning only the selected output (for TorchScript and torch.export programs)."""

    def __init__(self, inner: nn.Module, selection: dict[str, Any]) -> None:
        super().__init__()
        self.inner, self.selection = inner, dict(selection)

    def train(self, mode: bool = True) -> _Select:
        self.training = mode  # a program or script runs as it was saved
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pick_output(self.inner(x), self.selection)


@dataclass
class _Source:
    """What the file (or object) is, how to run it, and what it says about its own spec."""

    kind: str  # weights, module, torchscript, pt2, onnx
    format: str  # the artifact format it becomes
    path: Path | None
    sha256: str | None
    module: nn.Module | None = None  # torch kinds: the model (before any output selection)
    arch: dict[str, Any] | None = None  # torch artifacts: how to rebuild it
    arch_spec: ModelSpec | None = None  # a registered architecture's default spec
    file_spec: ModelSpec | None = None  # the spec the file carries (ONNX metadata)
    shape: list[int | None] | None = None  # the input shape the file fixes (None where dynamic)
    onnx_model: Any = None
    session: Any = None
    precision: str = "fp32"
    notes: list[str] = field(default_factory=list)

    def run(self, batch: np.ndarray) -> Any:
        """Raw outputs: a tensor, or a tuple / list / dict of them (numpy arrays for ONNX, by output name)."""
        if self.session is not None:
            names = [o.name for o in self.session.get_outputs()]
            outs = self.session.run(None, {self.session.get_inputs()[0].name: batch})
            return outs[0] if len(outs) == 1 else dict(zip(names, outs))
        with torch.no_grad():
            return self.module(torch.from_numpy(batch))


# ---------------------------------------------------------------------------- the front function


@io.writes_out
def import_model(source: nn.Module | str | os.PathLike, out: str | os.PathLike, config: ImportConfig = ImportConfig(),
                 *, spec: ModelSpec | None = None, resume: bool = False, progress: bool = True) -> Artifact:
    """Write ``source`` (a model file, or an ``nn.Module``) as an artifact in ``out``, its spec
    given (``config``, or every field of ``spec``) or measured, after running it on a few images.
    ``resume=True`` returns an import of the same file already in ``out``."""
    config.validate()
    out = Path(out)
    src = _open(source, config)
    if resume and is_artifact(out):
        last = load_artifact(out).manifest.lineage[-1:]
        if last and last[0].step == "import" and last[0].parent_sha256 == src.sha256:
            return load_artifact(out)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise InputError(out, "already holds files", "choose a new --out, or pass --overwrite to replace it")
    given = {**(spec.model_dump() if spec is not None else {}), **config.given_spec()}
    values, sources = _spec(src, given)
    check = _probe(src, values, sources, config)
    metrics = {"import": {"source": str(src.path) if src.path else f"an {type(source).__name__} object",
                          "kind": src.kind, "sha256": src.sha256, "spec_source": sources, **check}}
    step = Step(step="import", parent_sha256=src.sha256, params={
        "source": str(src.path) if src.path else None, "kind": src.kind, "output": config.selection(),
        "arch": config.arch, "class_path": (src.arch or {}).get("class_path"),
        "kwargs": dict(config.kwargs), "data": str(config.data) if config.data else "synthetic", "force": config.force})
    final = _make_spec(values)
    with io.staged_dir(out, "import") as staging:
        _write(src, staging, final, config, step, metrics)
    return load_artifact(out)


# ---------------------------------------------------------------------------- what it is


def _open(source: nn.Module | str | os.PathLike, config: ImportConfig) -> _Source:
    if isinstance(source, nn.Module):
        return _from_object(source, config)
    path = Path(source)
    if path.is_dir():
        if is_artifact(path):
            raise InputError(path, "is already an edgecut artifact", "use it as it is (edgecut info shows what it is)")
        raise InputError(path, "is a folder, not a model file", "give the model file (.pth, .pt, .safetensors, "
                                                                 ".pt2, .onnx or TorchScript)")
    if not path.is_file():
        raise InputError(path, "model file not found")
    kind = _kind(path)
    if kind != "weights" and (config.arch or config.class_path or config.kwargs):
        raise InputError(path, f"is a {kind} model, which carries its own architecture",
                         "drop --arch, --class and --kwargs (they rebuild a state dict)")
    sha = io.sha256_file(path)
    if kind == "weights":
        return _from_weights(path, sha, config)
    if kind == "torchscript":
        return _Source("torchscript", "torchscript", path, sha, module=load_torchscript(path).eval())
    if kind == "pt2":
        program = read_program(path)
        shape = program_input_shape(program)
        return _Source("pt2", "pt2", path, sha, module=Program(program.module(), shape[0] if shape else None),
                       shape=shape)
    return _from_onnx(path, sha)


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if is_torchscript(path):
        return "torchscript"
    if suffix == ".pt2" or is_program(path):
        return "pt2"
    if suffix in WEIGHT_SUFFIXES:
        return "weights"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # a zip: torch.save's format
        return "weights"
    return "onnx"  # protobuf has no magic number; ONNX's own parser names a file that is not one


def _from_weights(path: Path, sha: str, config: ImportConfig) -> _Source:
    if not (config.arch or config.class_path):
        raise InputError(path, "a state dict needs its architecture",
                         "pass --class path/to/file.py:ClassName (your model's class, with --kwargs JSON for its "
                         "options) or --arch NAME (edgecut info --list-archs)")
    arch = _arch(config)
    module = build({k: v for k, v in arch.items() if k != "output"}, pretrained=False)
    fix = ("check --class and --kwargs (the options the model was built with)" if config.class_path else
           "check --arch and --kwargs (width, depth, ...)")
    load_state(module, io.load_weights(path), path, fix)
    src = _Source("weights", "torch", path, sha, module=module.eval(), arch=arch)
    if config.arch:
        src.arch_spec = getattr(module, "default_spec", None)
    return src


def _arch(config: ImportConfig, class_path: str | None = None) -> dict[str, Any]:
    arch: dict[str, Any] = {"kwargs": dict(config.kwargs)}
    class_path = class_path or config.class_path
    if class_path:
        where, name, is_file = parse_class_path(class_path)
        if is_file:
            file = Path(where).expanduser().resolve()
            if not file.is_file():
                raise InputError(file, "the file of --class is not there", "give path/to/file.py:ClassName")
            arch.update(class_path=f"{file}:{name}", class_sha256=io.sha256_file(file))
        else:
            arch["class_path"] = class_path
        arch["name"] = name.rsplit(".", 1)[-1]
    else:
        arch["name"] = config.arch
    if config.selection():
        arch["output"] = config.selection()
    return arch


def _from_object(obj: nn.Module, config: ImportConfig) -> _Source:
    """An in-memory module: its class (re-importable) rebuilt with ``config.kwargs`` and its weights."""
    if isinstance(obj, torch.jit.ScriptModule):
        raise EdgecutError("give a TorchScript model as its file (torch.jit.save), not as an object")
    arch = _arch(config, class_path_of(type(obj)))
    try:
        module = build({k: v for k, v in arch.items() if k != "output"}, pretrained=False)
    except ModelError as e:
        raise ModelError(f"{e}; pass kwargs= the options {type(obj).__name__} was built with") from None
    state = {k: v.detach().cpu() for k, v in obj.state_dict().items()}
    problem = key_diff(module.state_dict(), state)
    if problem:
        raise ModelError(f"{type(obj).__name__}(**{dict(config.kwargs)}) does not rebuild this object: {problem}; "
                         "pass kwargs= the options it was built with")
    module.load_state_dict(state, strict=True)
    import hashlib

    from safetensors.torch import save

    digest = hashlib.sha256(save({k: v.contiguous() for k, v in state.items()})).hexdigest()
    return _Source("module", "torch", None, digest, module=module.eval(), arch=arch)


def _from_onnx(path: Path, sha: str) -> _Source:
    from edgecut import _optional
    from edgecut.runtime.onnxruntime_runner import inspect_model, read_spec

    _optional.require("onnxruntime", "importing ONNX models")
    model = inspect_model(path)
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    ops = {n.op_type for n in model.graph.node}
    precision = "int8" if ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"} else \
        "fp16" if any(t.data_type == 10 for t in model.graph.initializer) else "fp32"
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own error types
        raise InputError(path, f"onnxruntime cannot load this model ({io.first_line(e)})",
                         "re-export it with an opset this onnxruntime supports") from None
    return _Source("onnx", "onnx", path, sha, file_spec=read_spec(model, path), shape=shape, onnx_model=model,
                   session=session, precision=precision)


# ---------------------------------------------------------------------------- the spec


def _spec(src: _Source, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Spec values before the probe, and where each came from: given, file, arch default or default."""
    base, origin = (src.file_spec, "file") if src.file_spec else (src.arch_spec, "arch default") if src.arch_spec \
        else (ModelSpec(), "default")
    values = base.model_dump()
    sources = {f: origin for f in SPEC_FIELDS}
    if src.shape and src.file_spec is None and len(src.shape) == 4:
        h, w = src.shape[2], src.shape[3]
        if h and w:
            values.update(input_size=(h, w), dynamic_size=False)
            sources.update(input_size="file", dynamic_size="file")
        elif h is None and w is None:
            values["dynamic_size"], sources["dynamic_size"] = True, "file"
    fixed = src.shape[2:4] if src.shape and len(src.shape) == 4 else [None, None]
    size = given.get("input_size")
    if size is not None and all(fixed) and tuple(size) != tuple(fixed):
        raise InputError(src.path, f"takes {fixed[0]}x{fixed[1]} input only, not --size {size[0]} {size[1]}",
                         "drop --size, or export the model again at that size")
    if given.get("dynamic_size") and all(fixed):
        raise InputError(src.path, f"fixes its input at {fixed[0]}x{fixed[1]}", "drop --dynamic")
    for k, v in given.items():
        values[k] = v
        sources[k] = "given"
    return values, sources


def _make_spec(values: dict[str, Any]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(values)
    except ValidationError as e:
        raise EdgecutError(f"input spec: {first_error(e)}") from None


def _describe(out: Any) -> str:
    def shape(t: Any) -> str:
        return "x".join(str(d) for d in getattr(t, "shape", ())) or type(t).__name__

    if isinstance(out, dict):
        return f"a dict of {len(out)} outputs ({', '.join(f'{k!r}: {shape(v)}' for k, v in out.items())})"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} outputs ({', '.join(shape(v) for v in out)})"
    return f"one output of shape {shape(out)}"


def _select(src: _Source, raw: Any, selection: dict[str, Any] | None) -> np.ndarray:
    """The mask output of one forward: selected as asked, checked to be one N x 1 x H x W map."""
    where = src.path or "the model"
    if selection:
        try:
            if isinstance(raw, dict) and "index" in selection:  # several ONNX outputs: by position too
                raw = list(raw.values())
            out = pick_output(raw, selection)
        except (KeyError, IndexError, TypeError) as e:
            raise InputError(where, f"returns {_describe(raw)}: the selection {selection} does not fit it "
                             f"({type(e).__name__}: {io.first_line(e)})",
                             "pick one with --output-index N (a tuple), --output-key NAME (a dict or named outputs)"
                             " or --output-channel C") from None
    else:
        out = raw
    if isinstance(out, (dict, tuple, list)):
        flag = "--output-key NAME" if isinstance(out, dict) else "--output-index N"
        raise InputError(where, f"returns {_describe(out)}", f"say which is the mask with {flag}")
    arr = out.float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, np.float32)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise InputError(where, f"returns an output of shape {arr.shape}, not a one-channel map N x 1 x H x W",
                         "pick the mask output with --output-index / --output-key")
    if arr.shape[1] != 1:
        raise InputError(where, f"returns {arr.shape[1]} channels ({'x'.join(map(str, arr.shape))})",
                         "say which channel is the mask with --output-channel C")
    return arr


def _probe(src: _Source, values: dict[str, Any], sources: dict[str, str], config: ImportConfig) -> dict[str, Any]:
    """Run the model on ``config.count`` images; settle the measured fields; refuse what the numbers contradict."""
    from edgecut.exporters.parity import describe_source, load_images
    from edgecut.metrics import mask_iou

    spec = _make_spec(values)
    images = load_images(config.data, spec, count=config.count, seed=0)
    outs = []
    for im in images:
        try:
            raw = src.run(spec.preprocess(im.image))
        except InputError:
            raise
        except Exception as e:  # the user's model: anything may fail in its forward
            raise InputError(src.path or "the model", f"fails on a {spec.input_size[0]}x{spec.input_size[1]} input "
                             f"({type(e).__name__}: {io.first_line(e)})",
                             "give its input size with --size H W (and --mean / --std / --scale)") from None
        outs.append(_select(src, raw, config.selection()))
    stacked = np.concatenate([o.reshape(-1) for o in outs])
    if not np.isfinite(stacked).all():
        raise InputError(src.path or "the model", f"outputs NaN or infinite values on {len(images)} images",
                         "check the weights and --mean / --std / --scale")
    lo, hi = float(stacked.min()), float(stacked.max())
    in_unit = lo >= 0.0 and hi <= 1.0
    problems: list[tuple[str, str]] = []
    if sources["output"] not in ("given", "file"):
        values["output"] = "probability" if in_unit else "logits"
        sources["output"] = "measured"
    elif values["output"] == "logits" and in_unit:
        problems.append((f"declared logits, but its outputs lie in [{lo:.4f}, {hi:.4f}] on {len(images)} images, as "
                         "probabilities do (a sigmoid would be applied twice)", "pass --output probability"))
    elif values["output"] == "probability" and not in_unit:
        problems.append((f"declared probabilities, but its outputs range over [{lo:.4g}, {hi:.4g}] on {len(images)} "
                         "images, outside [0, 1]", "pass --output logits"))
    if sources["dynamic_size"] not in ("given", "file") and src.session is None and src.kind != "pt2":
        values["dynamic_size"] = _runs_at_other_sizes(src, spec, config.selection())
        sources["dynamic_size"] = "measured"
    spec = _make_spec(values)
    fg, ious = [], []
    for im, out in zip(images, outs):
        prob = spec.to_probability(out)[0]
        fg.append(float((prob > spec.threshold).mean()))
        if im.mask is not None:
            truth = spec.resize_back(im.mask.astype(np.float32) / 255.0, prob.shape) > 0.5
            ious.append(mask_iou(prob > spec.threshold, truth))
    if max(fg) == 0.0 or min(fg) == 1.0:
        cls = "background" if max(fg) == 0.0 else "foreground"
        problems.append((f"under this spec every pixel of the {len(images)} images is {cls} (outputs in "
                         f"[{lo:.4g}, {hi:.4g}], threshold {spec.threshold:g})",
                         "check --output, --mean, --std and --scale (the model's own preprocessing)"))
    report: dict[str, Any] = {
        "images": len(images), "data": describe_source(config.data), "output_range": [lo, hi],
        "output_shape": list(outs[0].shape), "foreground_fraction": {"min": min(fg), "mean": float(np.mean(fg)),
                                                                     "max": max(fg)},
        "warnings": [f"{p} ({fix})" for p, fix in problems]}
    if ious:
        report["mask_iou_mean"] = float(np.mean(ious))
    if tuple(outs[0].shape[-2:]) != tuple(spec.input_size):
        report["note"] = (f"the output is {outs[0].shape[-2]}x{outs[0].shape[-1]} at a {spec.input_size[0]}x"
                          f"{spec.input_size[1]} input: masks are resized to each image")
    if problems and not config.force:
        text = "; ".join(p for p, _ in problems)
        fixes = "; ".join(dict.fromkeys(f for _, f in problems))
        raise InputError(src.path or "the model", f"refused: {text}", f"{fixes}; or --force to import it anyway")
    return report


def _runs_at_other_sizes(src: _Source, spec: ModelSpec, selection: dict[str, Any] | None) -> bool:
    """Whether the model runs at another size (two size divisors larger) and keeps the output at the input's scale."""
    h, w = spec.input_size
    d = spec.size_divisor
    other = (h + 2 * d, w + 2 * d)
    x = np.zeros((1, 3, *other), np.float32)
    try:
        out = _select(src, src.run(x), selection)
        base = _select(src, src.run(np.zeros((1, 3, h, w), np.float32)), selection)
    except Exception:  # it does not: fixed size
        return False
    return out.shape[-2:] != base.shape[-2:]


# ---------------------------------------------------------------------------- the artifact


def _write(src: _Source, out: Path, spec: ModelSpec, config: ImportConfig, step: Step, metrics: dict) -> None:
    selection = config.selection()
    if src.format == "torch":
        module = build(src.arch, pretrained=False) if selection else src.module
        if selection:
            module.load_state_dict(src.module.state_dict(), strict=True)
        save_model(out, module.eval(), src.arch, spec, lineage=[step], metrics=metrics)
        return
    name = FILES[src.format]
    dest = out / name
    example = torch.from_numpy(spec.preprocess(np.zeros((*spec.input_size, 3), np.uint8)))
    params = macs = None
    if src.format == "torchscript":
        if selection:
            traced = torch.jit.trace(_Select(src.module, selection), (example,), check_trace=False)
            torch.jit.save(traced, str(dest))
        else:
            shutil.copyfile(src.path, dest)
        params = count_params(src.module)
    elif src.format == "pt2":
        if selection:
            dims = {i: torch.export.Dim.AUTO for i, d in enumerate(src.shape or []) if d is None}
            program = torch.export.export(_Select(src.module.inner, selection), (example,),
                                          dynamic_shapes={"x": dims} if dims else None)
            torch.export.save(program, str(dest))
        else:
            shutil.copyfile(src.path, dest)
        params = count_params(src.module)
    else:
        _write_onnx(src, dest, spec, selection)
        params = int(sum(np.prod(t.dims) for t in src.onnx_model.graph.initializer))
    if src.format != "onnx" and spec.input_size and params is not None:
        import warnings

        try:
            with warnings.catch_warnings():  # the counter's hooks touch a script's non-leaf tensors
                warnings.simplefilter("ignore")
                macs = count_macs(src.module, spec.input_size) if src.format == "pt2" else None
        except Exception:  # a program the counter cannot walk: MACs unknown, not guessed
            macs = None
    manifest = Manifest(format=src.format, precision=src.precision, model_file=name, arch=None, spec=spec,
                        params=params, macs=macs, lineage=[step], metrics=metrics, tools=tool_versions())
    write_artifact(out, manifest, {name: dest.read_bytes()})


def _write_onnx(src: _Source, dest: Path, spec: ModelSpec, selection: dict[str, Any] | None) -> None:
    import onnx
    from onnx import helper

    from edgecut.exporters.onnx import stamp

    model = onnx.load(str(src.path), load_external_data=True)
    graph = model.graph
    if selection and ("index" in selection or "key" in selection):
        outputs = list(graph.output)
        names = [o.name for o in outputs]
        chosen = outputs[int(selection["index"])] if "index" in selection else outputs[names.index(selection["key"])]
        del graph.output[:]
        graph.output.append(chosen)
    if selection and "channel" in selection:
        c = int(selection["channel"])
        head = graph.output[0]
        sliced = f"{head.name}_channel{c}"
        for name, value in (("starts", c), ("ends", c + 1), ("axes", 1)):
            graph.initializer.append(helper.make_tensor(f"{sliced}_{name}", onnx.TensorProto.INT64, [1], [value]))
        graph.node.append(helper.make_node("Slice", [head.name, f"{sliced}_starts", f"{sliced}_ends", f"{sliced}_axes"],
                                           [sliced]))
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(sliced, onnx.TensorProto.FLOAT, None))
    stamp(model, spec, src.precision, src.sha256)
    onnx.save(model, str(dest))
