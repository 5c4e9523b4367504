"""An ONNX model as a torch module, where the chain needs layers (pruning, fine-tuning, QAT, features).

A registered architecture whose weighted layers (Conv, ConvTranspose, BatchNorm) are called in the
graph's order with the graph's shapes, strides, paddings, dilations and groups gets the graph's
initializers; a batch norm the exporter folded into its convolution becomes the identity (its
bias carrying the folded one). The result is always run beside ONNX Runtime on real images and
refused, with the numbers, unless it gives the same masks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecut import io
from edgecut.artifact import Artifact, Step, is_artifact, load_artifact
from edgecut.compress.config import ConvertConfig
from edgecut.errors import EdgecutError, InputError, ModelError

TRACE_SIZE = 64  # side of the blank image that records the module's call order
WEIGHTED = ("Conv", "ConvTranspose", "BatchNormalization")


@dataclass
class Converted:
    module: nn.Module
    arch: dict[str, Any]
    spec: Any
    report: dict[str, Any]


def _graph_layers(model) -> list[dict[str, Any]]:
    """The graph's weighted nodes in order: op, initializer arrays, attributes."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED:
            continue
        attrs = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute}
        arrays = [numpy_helper.to_array(inits[n]) if n in inits else None for n in node.input[1:]]
        out.append({"op": node.op_type, "name": node.name, "arrays": arrays, "attrs": attrs})
    return out


def _module_layers(module: nn.Module, size: int) -> list[nn.Module]:
    """The module's Conv / ConvTranspose / BatchNorm layers in the order a forward pass calls them."""
    order: list[nn.Module] = []
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)
    hooks = [m.register_forward_pre_hook(lambda m, _i: order.append(m)) for m in module.modules()
             if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return order


def _conv_matches(layer: nn.Module, node: dict[str, Any]) -> bool:
    want = {"Conv": nn.Conv2d, "ConvTranspose": nn.ConvTranspose2d}[node["op"]]
    if type(layer) is not want or node["arrays"][0] is None or tuple(node["arrays"][0].shape) != tuple(layer.weight.shape):
        return False
    a = node["attrs"]
    pads = a.get("pads", [0, 0, 0, 0])
    return (list(a.get("strides", [1, 1])) == list(layer.stride) and list(a.get("dilations", [1, 1])) ==
            list(layer.dilation) and int(a.get("group", 1)) == layer.groups and pads[:2] == pads[2:] and
            tuple(pads[:2]) == tuple(layer.padding))


def fill(module: nn.Module, nodes: list[dict[str, Any]], size: int = TRACE_SIZE) -> str | None:
    """Copy the graph's weights into ``module``; None, or why its layers do not match the graph's."""
    layers = _module_layers(module, size)
    convs = [m for m in layers if not isinstance(m, nn.BatchNorm2d)]
    graph_convs = [n for n in nodes if n["op"] != "BatchNormalization"]
    graph_bns = [n for n in nodes if n["op"] == "BatchNormalization"]
    if len(convs) != len(graph_convs):
        return f"{len(convs)} convolutions against the graph's {len(graph_convs)}"
    for i, (m, n) in enumerate(zip(convs, graph_convs)):
        if not _conv_matches(m, n):
            return f"convolution {i} ({n['name'] or n['op']}) has another shape or stride"
    follows = {id(layers[i]): layers[i + 1] for i in range(len(layers) - 1)
               if not isinstance(layers[i], nn.BatchNorm2d) and isinstance(layers[i + 1], nn.BatchNorm2d)}
    bns = [m for m in layers if isinstance(m, nn.BatchNorm2d)]
    if graph_bns and len(graph_bns) != len(bns):
        return f"{len(bns)} batch norms against the graph's {len(graph_bns)}"
    with torch.no_grad():
        for m, n in zip(convs, graph_convs):
            m.weight.copy_(torch.from_numpy(n["arrays"][0].copy()))
            bias = n["arrays"][1] if len(n["arrays"]) > 1 else None
            bn = follows.get(id(m))
            if bias is not None and m.bias is not None:
                m.bias.copy_(torch.from_numpy(bias.copy()))
            elif m.bias is not None:
                m.bias.zero_()
            if bn is not None and not graph_bns:  # folded by the exporter: the norm becomes the identity
                bn.weight.fill_(1.0)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.bias.copy_(torch.from_numpy(bias.copy()) if bias is not None and m.bias is None
                              else torch.zeros_like(bn.bias))
            elif bias is not None and m.bias is None:
                return f"convolution {n['name']} has a bias the module's layer lacks, and no batch norm after it"
        for m, n in zip(bns, graph_bns):  # scale, B, mean, var
            for dst, src in zip((m.weight, m.bias, m.running_mean, m.running_var), n["arrays"]):
                dst.copy_(torch.from_numpy(src.copy()))
    return None


def _candidates(art: Artifact, asked: str | None) -> list[dict[str, Any]]:
    """Architectures to try: the one the manifest names (with its options and channels), then every registered one."""
    from edgecut.models.registry import list_models

    known = art.manifest.arch if (art.manifest.arch or {}).get("name") in list_models() else None
    if asked:
        return [known if known and known["name"] == asked else {"name": asked, "kwargs": {}}]
    return ([known] if known else []) + [{"name": n, "kwargs": {}} for n in list_models()
                                         if not known or n != known["name"] or known.get("kwargs")]


def to_torch(source: Artifact | str | os.PathLike, config: ConvertConfig = ConvertConfig()) -> Converted:
    """The ONNX artifact ``source`` as a registered architecture's module, checked against ONNX Runtime."""
    from edgecut._optional import require
    from edgecut.models.store import build

    art = source if isinstance(source, Artifact) else load_artifact(source)
    if art.manifest.format != "onnx" or art.manifest.precision != "fp32":
        raise EdgecutError(f"{art.path}: only fp32 ONNX models are converted to torch (this one is "
                           f"{art.manifest.format} {art.manifest.precision})")
    onnx = require("onnx", "reading ONNX models")
    nodes = _graph_layers(onnx.load(str(art.model_path)))
    if not nodes:
        raise ModelError(f"{art.path}: the graph has no Conv layers to carry into torch")
    tried = []
    graph_convs = sum(n["op"] != "BatchNormalization" for n in nodes)
    for arch in _candidates(art, config.arch):
        name = arch["name"]
        with torch.device("meta"):  # counted before anything is allocated
            convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in build(arch, pretrained=False).modules())
        if convs != graph_convs:
            tried.append(f"{name}: {convs} convolutions against the graph's {graph_convs}")
            continue
        torch.manual_seed(0)
        module = build(arch, pretrained=False).float()
        why = fill(module, nodes)
        if why is None:
            spec = art.spec.model_copy(update={"output": "logits", "dynamic_size": True,
                                               "size_divisor": module.default_spec.size_divisor})
            report = check(art, module.eval(), spec, config)
            report["arch"] = name
            report["layers"] = len(nodes)
            if not report["passed"]:
                raise ModelError(f"{art.path}: the {name} module filled from its graph differs from ONNX Runtime: "
                                 f"max abs diff {report['max_abs_diff']:.3g} (tolerance "
                                 f"{config.tolerances['max_abs_diff']}), mean mask IoU {report['mask_iou_mean']:.4f} "
                                 f"(tolerance {config.tolerances['mask_iou']}) over {report['images']} images; "
                                 "its outputs are not that architecture's (another output chosen at import?)")
            return Converted(module, dict(arch), spec, report)
        tried.append(f"{name}: {why}")
    raise ModelError(f"{art.path}: no registered architecture matches its graph ({len(nodes)} weighted layers), so "
                     f"it has no torch layers to prune or fine-tune: " + "; ".join(tried))


def check(art: Artifact, module: nn.Module, spec, config: ConvertConfig) -> dict[str, Any]:
    """The module against ONNX Runtime on ``config``'s images: max abs diff and mask IoU of probabilities."""
    from edgecut import runtime
    from edgecut.exporters.parity import describe_source, load_images
    from edgecut.metrics import mask_iou

    runner = runtime.load(art, threads=None)
    images = load_images(Path(config.data) if config.data else None, art.spec, count=config.count, seed=0,
                         split=config.split)
    diffs, ious = [], []
    for item in images:
        batch = art.spec.preprocess(item.image)
        p_ref = art.spec.to_probability(runner(batch))[0]
        with torch.no_grad():
            p_new = spec.to_probability(module(torch.from_numpy(batch)).numpy())[0]
        diffs.append(float(np.abs(p_ref - p_new).max()))
        ious.append(mask_iou(p_ref >= spec.threshold, p_new >= spec.threshold))
    tol = config.tolerances
    report = {"against": "onnxruntime", "images": len(images), "data": describe_source(
        Path(config.data) if config.data else None, config.split), "max_abs_diff": max(diffs),
        "mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(min(ious)), "tolerances": dict(tol)}
    report["passed"] = report["max_abs_diff"] <= tol["max_abs_diff"] and report["mask_iou_mean"] >= tol["mask_iou"]
    return report


def convert_step(art: Artifact, converted: Converted) -> Step:
    """The lineage step of a conversion, with its check."""
    return Step(step="convert", parent_sha256=art.sha256, params={"to": "torch", **converted.report})


@io.writes_out
def convert(source: Artifact | str | os.PathLike, out: str | os.PathLike, config: ConvertConfig = ConvertConfig(), *,
            resume: bool = False, progress: bool = True) -> Artifact:
    """Write the torch artifact of the ONNX artifact ``source`` into ``out`` (``edgecut convert``)."""
    from edgecut.models.store import save_model

    del progress
    if not isinstance(source, Artifact) and not is_artifact(source):
        raise InputError(source, "is no artifact folder (no edgecut.json)", "import the file first: edgecut import")
    art = source if isinstance(source, Artifact) else load_artifact(source)
    if resume and is_artifact(out) and load_artifact(out).manifest.lineage[-1:] and \
            load_artifact(out).manifest.lineage[-1].parent_sha256 == art.sha256:
        return load_artifact(out)
    converted = to_torch(art, config)
    return save_model(out, converted.module, converted.arch, converted.spec,
                      lineage=[*art.manifest.lineage, convert_step(art, converted)], metrics=dict(art.manifest.metrics))
