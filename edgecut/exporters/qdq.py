"""Passes over QDQ ONNX graphs (QuantizeLinear / DequantizeLinear pairs), and what they hold.

A fake-quantised torch model (NNCF's QAT) traces to a graph where every quantised tensor, weights included, goes
through ``QuantizeLinear -> DequantizeLinear``. Two exact rewrites bring it to the form ONNX Runtime's
``quantize_static`` writes, which its QDQ fusions turn into integer kernels: :func:`fold_weight_quantizers` makes
the weights int8 initializers behind their ``DequantizeLinear``, and :func:`sink_concat_dequantize` turns
``Concat(DQ(a), DQ(b))`` with one scale and zero point for every input into ``DQ(Concat(a, b))``. :func:`summary`
counts what a QDQ graph quantises and says whether every zero point is 0 and int8, which TensorRT's explicit
quantization requires.

Why each rewrite: docs/design-decisions.md#qdq
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

INT_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}
NO_SATURATION = 64  # |int8 weight| up to this: two u8 x s8 products fit the int16 sum of AVX2's VPMADDUBSW


def _constants(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by name."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _consumers(graph) -> Counter:
    uses: Counter = Counter(i for n in graph.node for i in n.input)
    uses.update(o.name for o in graph.output)
    return uses


def _axis(node, default: int = 1) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), default)


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point)."""
    lo, hi = INT_RANGES[zero_point.dtype]
    s = _broadcast(scale.astype(np.float32), x.ndim, axis)
    z = _broadcast(zero_point.astype(np.int32), x.ndim, axis)
    q = np.rint(x.astype(np.float32) / s) + z
    return np.clip(q, lo, hi).astype(zero_point.dtype)


def fold_weight_quantizers(model) -> int:
    """Replace every QuantizeLinear of a constant float tensor by its integer result; return how many."""
    from onnx import numpy_helper

    graph = model.graph
    consts = _constants(graph)
    keep, folded = [], 0
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and all(i in consts for i in node.input) \
                and consts[node.input[2]].dtype in INT_RANGES and consts[node.input[0]].dtype == np.float32:
            x, scale, zp = (consts[i] for i in node.input)
            graph.initializer.append(numpy_helper.from_array(quantize(x, scale, zp, _axis(node)), node.output[0]))
            folded += 1
        else:
            keep.append(node)
    if folded:
        _replace_nodes(graph, keep)
        remove_unused(model)
    return folded


def sink_concat_dequantize(model) -> int:
    """``Concat(DQ(a; s, z), DQ(b; s, z), ...)`` -> ``DQ(Concat(a, b, ...); s, z)``; return how many."""
    from onnx import helper

    graph = model.graph
    consts = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    nodes, done = [], 0
    for node in graph.node:
        dqs = [producer.get(i) for i in node.input]
        if node.op_type != "Concat" or not dqs or any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            nodes.append(node)
            continue
        params = [tuple(consts.get(i) for i in d.input[1:3]) for d in dqs]
        if any(len(p) < 2 or p[0] is None or p[1] is None or p[0].size != 1 for p in params) or not all(
                np.array_equal(p[0], params[0][0]) and np.array_equal(p[1], params[0][1])
                and p[1].dtype == params[0][1].dtype for p in params):
            nodes.append(node)  # per-channel or differing scales: not exact to move
            continue
        quantized = f"{node.output[0]}_quantized"
        concat = helper.make_node("Concat", [d.input[0] for d in dqs], [quantized], name=node.name,
                                  axis=_axis(node, 0))
        dq = helper.make_node("DequantizeLinear", [quantized, *dqs[0].input[1:3]], list(node.output),
                              name=f"{node.name}_dequantize")
        nodes.extend([concat, dq])
        done += 1
    if done:
        _replace_nodes(graph, nodes)
        remove_unused(model)
    return done


def remove_unused(model) -> None:
    """Drop nodes whose outputs nobody reads and initializers nobody uses (repeatedly)."""
    graph = model.graph
    while True:
        uses = _consumers(graph)
        keep = [n for n in graph.node if any(uses[o] for o in n.output)]
        if len(keep) == len(graph.node):
            break
        _replace_nodes(graph, keep)
    uses = _consumers(graph)
    unused = [t for t in graph.initializer if not uses[t.name]]
    for t in unused:
        graph.initializer.remove(t)


def _replace_nodes(graph, nodes) -> None:
    copies = [type(n)() for n in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def summary(model) -> dict[str, Any]:
    """Counts of a QDQ graph: quantised weights and activations, their integer types, zero points."""
    graph = model.graph
    consts = _constants(graph)
    init_names = {t.name for t in graph.initializer}
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    weights = [n for n in dq if n.input[0] in init_names]
    zps = [consts.get(n.input[2]) if len(n.input) > 2 else None for n in dq]
    types = Counter(("uint8" if z is None else str(z.dtype)) for z in zps)  # no zero point: uint8 0 by the spec
    values = [v for n in weights if (v := consts.get(n.input[0])) is not None and v.dtype == np.int8]  # not int32 biases
    return {
        "quantize_linear": sum(1 for n in graph.node if n.op_type == "QuantizeLinear"),
        "dequantize_linear": len(dq),
        "int8_weights": len(weights),
        "max_abs_int8_weight": max((int(np.abs(v.astype(np.int32)).max()) for v in values if v.size), default=None),
        "float_weights_quantized_at_run_time": sum(
            1 for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in init_names),
        "zero_point_types": dict(sorted(types.items())),
        "symmetric": all(z is None or not np.any(z) for z in zps),
    }


def saturation_note(summary: dict[str, Any]) -> str | None:
    """A note when the int8 weights use more than 7 bits (what ONNX Runtime saturates on x86 without VNNI)."""
    top = summary.get("max_abs_int8_weight")
    if top is None or top <= NO_SATURATION:
        return None
    return (f"int8 weights reach |{top}| (more than 7 bits): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's int8 "
            "kernels can saturate, so this model may compute differently there; on VNNI, ARM and GPUs it does not")


def tensorrt_compatible(model) -> str | None:
    """Why TensorRT's explicit quantization would refuse this QDQ graph, or None if it would not."""
    info = summary(model)
    if not info["dequantize_linear"]:
        return "the model holds no QuantizeLinear / DequantizeLinear nodes"
    bad = sorted(set(info["zero_point_types"]) - {"int8", "int32"})
    if bad:
        return (f"it quantises to {', '.join(bad)}; TensorRT takes int8 Q/DQ only (build INT8 from the float "
                "model; a QAT model: re-run 'edgecut qat' with --signed-activations)")
    if not info["symmetric"]:
        return ("its zero points are not all 0 (asymmetric activations); TensorRT takes symmetric int8 only "
                "(re-run 'edgecut qat' with --signed-activations, or build INT8 from the float model)")
    if "int32" in info["zero_point_types"]:
        return "it dequantizes int32 biases; TensorRT takes float biases (build INT8 from the float model)"
    return None
