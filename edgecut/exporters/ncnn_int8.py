"""ncnn INT8: the calibration of ncnn's ``ncnn2table`` and the weight rewrite of its ``ncnn2int8``.

Neither the ``ncnn`` nor the ``pnnx`` wheel ships those two C++ tools, so edgecut does their work here, on the FP32
graph pnnx wrote, with the ``ncnn`` Python package running it. Calibration: every ``Convolution``,
``ConvolutionDepthWise`` and ``InnerProduct`` layer gets the scale of its input blob (``minmax``, ``percentile`` or
``entropy``) and per-output-channel weight scales. Rewrite: those layers' weights become int8 behind ncnn's int8
tag, with ``int8_scale_term`` set and the scales after the bias; a quantised convolution feeding another one
requantises its output, as ``ncnn2int8``'s ``fuse_requantize`` does; other layers keep float32 weights. The ``.bin``
has no index: each layer's weights are found by walking the layers in order with the layouts of :data:`LAYOUTS`; a
weighted layer type not there, or a walk that does not end exactly at the end of the file, is refused.

The scales, roundings and layouts, as ncnn computes them: docs/design-decisions.md#ncnn-int8
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecut.errors import EdgecutError, ModelError

TAG_FP16, TAG_INT8, TAG_FP32 = 0x01306B47, 0x000D4B38, 0x0002C056  # a tagged weight's 4-byte header
QUANTISED = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}  # type -> ncnn2int8's int8_scale_term
HIST_BINS, TARGET_BINS = 2048, 128  # ncnn2table's histogram and quantised levels
WEIGHTLESS = {"Input", "Split", "Concat", "Interp", "Pooling", "BinaryOp", "UnaryOp", "Eltwise", "HardSwish",
              "HardSigmoid", "Sigmoid", "ReLU", "Clip", "Swish", "TanH", "ELU", "GELU", "Mish", "Softmax",
              "PixelShuffle", "Reorg", "Crop", "Reshape", "Permute", "Flatten", "Slice", "Dropout", "Noop",
              "Squeeze", "ExpandDims", "Exp", "Log", "Power", "Threshold"}  # layer types that load no weights


@dataclass
class Layer:
    """One line of an ncnn ``.param``: type, name, blobs, ``key=value`` params (as text, in order)."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[str, str]
    weights: list[bytes] = field(default_factory=list)  # its stretches of the .bin, in load order

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(str(key), default))

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        return " ".join([head, *self.bottoms, *self.tops, *(f"{k}={v}" for k, v in self.params.items())])


def read_param(path: Path) -> tuple[list[Layer], int]:
    """The layers of an ncnn ``.param`` and its blob count."""
    from edgecut.runtime.ncnn_runner import MAGIC

    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2 or lines[0].strip() != MAGIC:
        raise ModelError(f"{path}: not an ncnn graph (no {MAGIC} magic line)")
    count, blobs = (int(v) for v in lines[1].split()[:2])
    layers = []
    for ln in lines[2:]:
        parts = ln.split()
        nb, nt = int(parts[2]), int(parts[3])
        blob_end = 4 + nb + nt
        params = dict(p.split("=", 1) for p in parts[blob_end:])
        layers.append(Layer(parts[0], parts[1], parts[4:4 + nb], parts[4 + nb:blob_end], params))
    if len(layers) != count:
        raise ModelError(f"{path}: the header says {count} layers, the file has {len(layers)}")
    return layers, blobs


def write_param(layers: Sequence[Layer], blobs: int, path: Path) -> None:
    from edgecut.runtime.ncnn_runner import MAGIC

    path.write_text("\n".join([MAGIC, f"{len(layers)} {blobs}", *(layer.line() for layer in layers)]) + "\n")


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def _tagged_size(data: bytes, at: int, count: int) -> int:
    """Bytes of a tagged weight of ``count`` values at ``at`` (ncnn's ``ModelBin::load(w, 0)``)."""
    if at + 4 > len(data):
        return len(data) + 1  # past the end: the walk's final check reports it
    tag = struct.unpack_from("<I", data, at)[0]
    if tag == TAG_FP16:
        return 4 + _align4(2 * count)
    if tag == TAG_INT8:
        return 4 + _align4(count)
    if tag == TAG_FP32 or sum(data[at:at + 4]) == 0:
        return 4 + 4 * count
    return 4 + 256 * 4 + _align4(count)  # a 256-value table and uint8 indices


def _conv_like(layer: Layer) -> list[tuple[int, bool]]:
    """(values, tagged) of each stretch a convolution or inner product loads: weights, bias, int8 scales."""
    if layer.int(19):  # a convolution's dynamic weights come in as a blob
        return []
    fc = layer.type == "InnerProduct"  # its bias_term and weight_data_size are params 1 and 2, not 5 and 6
    out, scale_term = layer.int(0), layer.int(8)
    parts = [(layer.int(2 if fc else 6), True)] + ([(out, False)] if layer.int(1 if fc else 5) else [])
    if scale_term:
        per = {"ConvolutionDepthWise": layer.int(7, 1) if scale_term % 100 == 1 else 1}.get(layer.type, out)
        parts += [(per, False), (1, False)] + ([(1, False)] if scale_term > 100 else [])
    return parts


def _memory_data(layer: Layer) -> list[tuple[int, bool]]:
    w, h, d, c = layer.int(0), layer.int(1), layer.int(11), layer.int(2)
    return [(w * max(h, 1) * max(d, 1) * max(c, 1), False)]


LAYOUTS: dict[str, Callable[[Layer], list[tuple[int, bool]]]] = {  # what load_model reads, per weighted type
    "Convolution": _conv_like, "ConvolutionDepthWise": _conv_like, "InnerProduct": _conv_like,
    "Deconvolution": _conv_like, "DeconvolutionDepthWise": _conv_like,
    "BatchNorm": lambda layer: [(layer.int(0), False)] * 4,  # slope, mean, variance, bias
    "Scale": lambda layer: [] if layer.int(0) == -233 else [(layer.int(0), False)] * (1 + (layer.int(1) > 0)),
    "PReLU": lambda layer: [(layer.int(0), False)],
    "MemoryData": _memory_data,
}


def split_weights(layers: Sequence[Layer], data: bytes, where: Path) -> None:
    """Give every layer its stretches of the ``.bin`` (``data``), walking the layers in order."""
    at = 0
    for layer in layers:
        if layer.type in WEIGHTLESS:
            continue
        if layer.type not in LAYOUTS:
            raise ModelError(f"{where}: layer {layer.name} is a {layer.type}, whose weights edgecut's ncnn INT8 "
                             f"rewrite cannot walk; export int8 as ort, onnx or openvino")
        for count, tagged in LAYOUTS[layer.type](layer):
            size = _tagged_size(data, at, count) if tagged else 4 * count
            layer.weights.append(data[at:at + size])
            at += size
    if at != len(data):
        raise ModelError(f"{where}: the layers' weights take {at} bytes but the file has {len(data)}: a graph and "
                         f"weights that do not belong together")


def float_weights(layer: Layer) -> np.ndarray:
    """A convolution's or inner product's weights (its first, tagged stretch) as float32; other encodings
    (fp16, int8, a value table) are refused."""
    blob = layer.weights[0]
    if struct.unpack_from("<I", blob)[0] not in (0, TAG_FP32):
        raise ModelError(f"layer {layer.name}: ncnn INT8 quantises float32 weights: export the FP32 graph first")
    return np.frombuffer(blob[4:], dtype="<f4")


def float2int8(x: np.ndarray) -> np.ndarray:
    """ncnn's rounding: half away from zero, clipped to [-127, 127]."""
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), -127, 127).astype(np.int8)


def weight_scales(layer: Layer) -> np.ndarray:
    """``127 / max|w|`` per output channel (per group for depthwise), ``31 / max|w|`` for a 3x3 stride-1
    convolution (ncnn's int8 Winograd F43 needs 6-bit weights); 1 where a channel is all zeros."""
    w = float_weights(layer)
    rows = layer.int(7, 1) if layer.type == "ConvolutionDepthWise" else layer.int(0)
    absmax = np.abs(w.reshape(rows, -1)).max(axis=1)
    top = 31.0 if layer.type == "Convolution" and _winograd(layer) else 127.0
    return np.where(absmax == 0, 1.0, top / np.where(absmax == 0, 1.0, absmax)).astype(np.float32)


def _winograd(layer: Layer) -> bool:
    kw, sw, dw = layer.int(1), layer.int(3, 1), layer.int(2, 1)
    return (kw, layer.int(11, kw), sw, layer.int(13, sw), dw, layer.int(12, dw)) == (3, 3, 1, 1, 1, 1)


def quantisable(layers: Sequence[Layer], exclude_nodes: Iterable[str] = (), exclude_types: Iterable[str] = ()
                ) -> list[Layer]:
    """The layers to quantise: float convolutions and inner products with one input, less the exclusions."""
    names, types = set(exclude_nodes), set(exclude_types)
    unknown = names - {layer.name for layer in layers}
    if unknown:
        sample = ", ".join([layer.name for layer in layers if layer.type in QUANTISED][:5])
        raise EdgecutError(f"--exclude: no ncnn layer named {', '.join(sorted(unknown))} (they look like {sample}; "
                           "every name is in the FP32 export's model.ncnn.param)")
    return [layer for layer in layers if layer.type in QUANTISED and layer.name not in names
            and layer.type not in types and not layer.int(19) and len(layer.bottoms) == 1]


# ---------------------------------------------------------------------------- calibration (ncnn2table)


def _kl_threshold(hist: np.ndarray) -> int:
    """ncnn2table's KL search: the bin count T (128 to 2047) whose clipped distribution (bins below T,
    the rest added to bin T-1) is nearest, in KL divergence, its 128-level version (the bins below T
    averaged over 128 equal, fractional-edged levels and spread back), both with ncnn2table's 1e-4 floor."""
    h = hist.astype(np.float64) / max(hist.sum(), 1)
    cum = np.concatenate([[0.0], np.cumsum(h)])  # the histogram's mass below each integer edge

    def mass_below(x: np.ndarray) -> np.ndarray:  # a bin's mass spread evenly over it
        k = np.minimum(np.floor(x).astype(np.int64), len(h) - 1)
        return cum[k] + (x - k) * h[k]

    eps, best, best_kl = 1e-4, TARGET_BINS, np.inf
    for t in range(TARGET_BINS, len(h)):
        clip = h[:t] + eps
        clip[-1] += cum[-1] - cum[t]
        step = t / TARGET_BINS
        edges = np.arange(TARGET_BINS + 1) * step
        levels = np.diff(mass_below(edges))  # each level's mass (its density times step)
        below = np.concatenate([[0.0], np.cumsum(levels)])
        k = np.arange(t + 1)
        j = np.minimum((k / step).astype(np.int64), TARGET_BINS - 1)
        expand = np.diff(below[j] + (k - edges[j]) * levels[j] / step) + eps
        kl = float(np.sum(clip * np.log(clip / expand)))
        if kl < best_kl:
            best, best_kl = t, kl
    return best


def input_scales(net_of: Callable[[], Any], inputs: Sequence[np.ndarray], layers: Sequence[Layer], method: str,
                 percentile: float) -> dict[str, float]:
    """Each layer's input scale (``127 / threshold``) from the FP32 graph run on ``inputs`` (CHW float32)."""
    blobs = sorted({layer.bottoms[0] for layer in layers})
    absmax = dict.fromkeys(blobs, 0.0)
    for values in _blob_values(net_of, inputs, blobs):
        for name, v in values.items():
            absmax[name] = max(absmax[name], float(np.abs(v).max()))
    thresholds = dict(absmax)
    if method != "minmax":
        hists = {name: np.zeros(HIST_BINS, np.int64) for name in blobs}
        for values in _blob_values(net_of, inputs, blobs):
            for name, v in values.items():
                if absmax[name] > 0:
                    a = np.abs(v[v != 0])  # ncnn2table skips zeros (ReLU's half of a blob)
                    hists[name] += np.histogram(a, bins=HIST_BINS, range=(0.0, absmax[name]))[0]
        for name in blobs:
            width = absmax[name] / HIST_BINS
            if absmax[name] == 0 or hists[name].sum() == 0:
                continue
            if method == "entropy":
                thresholds[name] = (_kl_threshold(hists[name]) + 0.5) * width
            else:  # percentile of |x|, read off the histogram (the upper edge of the bin reaching it)
                cum = np.cumsum(hists[name]) / hists[name].sum()
                thresholds[name] = (int(np.searchsorted(cum, percentile / 100.0)) + 1) * width
    return {layer.name: (127.0 / thresholds[layer.bottoms[0]] if thresholds[layer.bottoms[0]] > 0 else 1.0)
            for layer in layers}


def _blob_values(net_of: Callable[[], Any], inputs: Sequence[np.ndarray], blobs: Sequence[str]):
    """Per input, the named blobs of the FP32 graph as arrays."""
    import ncnn

    net = net_of()
    inp = net.input_names()[0]
    for chw in inputs:
        chw = np.ascontiguousarray(chw, dtype=np.float32)
        with net.create_extractor() as ex:
            ex.set_light_mode(False)  # keep every blob: they are read one after another
            ex.input(inp, ncnn.Mat(chw))
            out = {}
            for name in blobs:
                ret, mat = ex.extract(name)
                if ret != 0:
                    raise ModelError(f"ncnn could not compute blob {name} during calibration (extract returned {ret})")
                out[name] = np.array(mat, dtype=np.float32)
        yield out


# ---------------------------------------------------------------------------- the rewrite (ncnn2int8)


def quantise(layers: Sequence[Layer], targets: Sequence[Layer], scales: dict[str, float]) -> int:
    """Rewrite ``targets`` in place as int8 layers with their input ``scales``; returns the requantised count."""
    for layer in targets:
        ws = weight_scales(layer)
        q = float2int8(float_weights(layer).reshape(len(ws), -1) * ws[:, None]).reshape(-1)
        data = struct.pack("<I", TAG_INT8) + q.tobytes() + b"\0" * (_align4(q.size) - q.size)
        layer.weights = [data, *layer.weights[1:], ws.astype("<f4").tobytes(),
                         np.float32(scales[layer.name]).astype("<f4").tobytes()]
        layer.params["8"] = str(QUANTISED[layer.type])
    return _fuse_requantize(layers, scales)


def _fuse_requantize(layers: Sequence[Layer], scales: dict[str, float]) -> int:
    """A quantised convolution whose output goes only to quantised convolutions (directly, or through a
    Split) hands them int8: it requantises with their input scale."""
    consumers: dict[str, list[Layer]] = {}
    for layer in layers:
        for b in layer.bottoms:
            consumers.setdefault(b, []).append(layer)
    conv = lambda layer: layer.type in ("Convolution", "ConvolutionDepthWise") and layer.name in scales  # noqa: E731
    fused = 0
    for layer in layers:
        if not conv(layer) or len(layer.tops) != 1:
            continue
        after = consumers.get(layer.tops[0], [])
        if len(after) == 1 and after[0].type == "Split":
            after = [c for top in after[0].tops for c in consumers.get(top, [])]
        if not after or not all(conv(c) for c in after):
            continue
        layer.params["8"] = str(int(layer.params["8"]) + 100)
        layer.weights.append(np.float32(scales[after[0].name]).astype("<f4").tobytes())  # as ncnn2int8: the first's
        fused += 1
    return fused


def write_weights(layers: Sequence[Layer], path: Path) -> None:
    with open(path, "wb") as f:
        for layer in layers:
            for blob in layer.weights:
                f.write(blob)
