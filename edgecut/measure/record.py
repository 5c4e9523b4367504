"""BenchRecord: one JSON line per (artifact, backend, target, device, precision, input size, batch, threads).

Tables and plots are made from records, never from live runs, so a record carries everything a
report needs: what was measured (artifact, its sha256, format, precision, params, MACs, file
size), where and how (backend, device, target, threads, batch, input size, and the
environment fingerprint of :func:`edgecut.env.environment`), and what came out (latency
statistics, throughput per batch size, peak memory, end-to-end cut-out latency, accuracy on a
named data set with its worst images, agreement with a reference artifact).

Records are appended to a ``.jsonl`` file one line at a time (each line is complete JSON, so a
run that is interrupted keeps every record it finished). :func:`read_records` names the file
and line of anything it cannot read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from edgecut import io
from edgecut.parsing import MAX_DEPTH, MAX_JSON_BYTES, depth
from edgecut.errors import InputError
from edgecut.runtime.timing import Latency  # a record's latency is the statistics measure() returns

RECORD_SCHEMA = 1


class Throughput(BaseModel):
    """Images per second at one batch size (from the median batch latency)."""

    model_config = ConfigDict(extra="forbid")

    batch: int
    p50_ms: float  # latency of one batch
    images_per_s: float
    unstable: bool = False


class Memory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    peak_rss_mb: float | None = None  # peak resident memory of the process while loading and running
    gpu_peak_mb: float | None = None  # peak CUDA memory (torch backend on cuda only)


class Host(BaseModel):
    """How free the CPU cores were while a record was measured (see :mod:`edgecut.measure.canary`)."""

    model_config = ConfigDict(extra="forbid")

    parallel_speedup: float | None = None  # the lowest canary right after a kept run
    best_speedup: float | None = None  # the machine's quiet level at this thread count when the record was written
    busy: bool = False  # parallel_speedup below BUSY_FRACTION of best_speedup: the host was taking our cores
    waited_s: float = 0.0  # waited for a busy machine before this record's runs
    discarded_runs: int = 0  # worker runs measured again because the canary fell during them


class WorstImage(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    iou: float
    mae: float | None = None
    image: str | None = None  # path of the input image
    cutout: str | None = None  # path of a saved RGBA cut-out, relative to the records file


class Accuracy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str  # data set name (folder name, with the split: "ecssd/val")
    count: int  # images scored
    input_size: tuple[int, int]  # the size images were fed at
    metrics: dict[str, float]  # iou, mae, s_measure, max_f, ... (see edgecut.metrics)
    worst: list[WorstImage] = Field(default_factory=list)


class Agreement(BaseModel):
    """How close this artifact's outputs are to a reference artifact's, image by image."""

    model_config = ConfigDict(extra="forbid")

    reference: str  # the reference's name
    reference_sha256: str
    count: int
    mask_iou_mean: float
    mask_iou_min: float
    max_abs_diff: float  # of probabilities, over all images


class Instructions(BaseModel):
    """Guest instructions retired per inference on an emulated CPU (``arm64-emu``): exact and
    repeatable, they rank artifacts on that architecture; they are not milliseconds on a device."""

    model_config = ConfigDict(extra="forbid")

    per_inference: int
    iterations: int  # inferences counted (after two uncounted ones)
    process_total: int  # the whole process, start-up and loading included
    cpu: str  # the emulated core
    emulator: str
    exact: bool = True  # False: the runtime's threads move the count a little between runs (OpenVINO)
    note: str = ""


class TargetParity(BaseModel):
    """The same artifact on the target against this machine's Runner of it, image by image."""

    model_config = ConfigDict(extra="forbid")

    against: str  # "local"
    backend: str  # the local Runner's backend
    count: int
    max_abs_diff: float  # of the raw outputs, over all images
    mask_iou_mean: float
    mask_iou_min: float


class BenchRecord(BaseModel):
    """One measurement; one line of a ``.jsonl`` records file."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = RECORD_SCHEMA
    run_id: str  # one id per bench invocation: speed ratios are only fair inside one run
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    name: str  # display name (the artifact folder's name unless given)
    artifact: str  # the artifact folder as given
    sha256: str  # of the model file
    arch: str | None = None  # registry name of the architecture ("unet", "u2netp", ...) when known
    format: str  # torch, onnx, openvino, tensorrt
    precision: str  # fp32, fp16, int8
    backend: str  # torch, onnxruntime, openvino, tensorrt
    device: str  # cpu, cuda
    target: str = "local"  # where it ran: local, arm64-emu (emulated: instructions, no latency), ssh://user@host
    input_size: tuple[int, int]  # (H, W)
    batch: int
    threads: int | None  # intra-op threads the Runner was given (None: the backend's default)
    params: int | None = None
    macs: int | None = None  # per image at input_size
    size_mb: float  # model file(s) on disk, MiB
    latency: Latency | None = None  # model only, one batch of ``batch`` images (the kept run when repeated)
    latency_runs_ms: list[float] = Field(default_factory=list)  # p50 of each worker run (--repeats)
    latency_ci_ms: tuple[float, float] | None = None  # 95% interval of the kept p50's quantile (13+ runs)
    throughput: list[Throughput] = Field(default_factory=list)
    end_to_end: Latency | None = None  # decode + preprocess + infer + postprocess + encode RGBA, one image
    memory: Memory = Field(default_factory=Memory)
    host: Host | None = None  # CPU only: the parallel-speedup canary of the kept run
    accuracy: Accuracy | None = None
    agreement: Agreement | None = None
    instructions: Instructions | None = None  # arm64-emu: the deterministic cost (no latency there)
    parity: TargetParity | None = None  # a target's outputs against this machine's (--target)
    env: dict[str, Any] = Field(default_factory=dict)  # edgecut.env.environment() of the measuring machine
    notes: list[str] = Field(default_factory=list)
    _source: Path | None = PrivateAttr(default=None)  # the .jsonl it was read from (set by read_records)

    @property
    def source(self) -> Path | None:
        """The records file this record was read from; relative paths inside it (cut-outs) are relative to its folder."""
        return self._source

    @property
    def machine(self) -> str:
        return machine_id(self.env)

    @property
    def key(self) -> tuple:
        """What makes two records the same measurement (latest wins when a file holds both)."""
        return (self.sha256, self.backend, self.device, self.target, self.precision, tuple(self.input_size),
                self.batch, self.threads, self.machine)

    def to_json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=False, separators=(",", ":"))


@dataclass(frozen=True)
class Hooks:
    """What a bench tells its caller as it goes (both optional): each record once it is appended, and lines of
    news (a bench here: while it waits for a busy machine; a bench on a target: each stage as it starts)."""

    on_record: Callable[[BenchRecord], None] | None = None
    say: Callable[[str], None] | None = None


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def machine_id(env: dict[str, Any]) -> str:
    """A short id of the hardware a record was measured on (CPU model, arch, cores, GPUs).

    Library versions are left out on purpose: the same machine after an upgrade is still the
    same machine, and the report shows versions separately.
    """
    cpu = env.get("cpu", {}) if isinstance(env, dict) else {}
    gpus = env.get("gpus", []) if isinstance(env, dict) else []
    key = json.dumps({"cpu": cpu.get("model"), "arch": cpu.get("arch"), "cores": cpu.get("cores"),
                      "gpus": gpus, "target": env.get("target") if isinstance(env, dict) else None}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def machine_label(env: dict[str, Any]) -> str:
    """A human label of the machine: 'Intel Xeon ... (x86_64, 2 cores)'."""
    cpu = env.get("cpu", {}) if isinstance(env, dict) else {}
    label = f"{cpu.get('model') or 'unknown CPU'} ({cpu.get('arch', '?')}, {cpu.get('cores', '?')} cores)"
    gpus = env.get("gpus") if isinstance(env, dict) else None
    if gpus:
        label += " + " + ", ".join(map(str, gpus))
    if isinstance(env, dict) and env.get("target") not in (None, "local"):
        label = f"{env['target']}: {label}"
    return label


def append_records(path: str | os.PathLike, records: Iterable[BenchRecord]) -> Path:
    """Append records to a ``.jsonl`` file, one flushed and fsynced line each."""
    path = Path(path)
    io.make_dirs(path.parent)
    with io.writing(path), open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(rec.to_json_line() + "\n")
            f.flush()
            os.fsync(f.fileno())
    return path


def read_records(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[BenchRecord]:
    """Read every record of one or more ``.jsonl`` files, in file order.

    A missing file, a line that is not JSON, or a record of another schema gets one error naming
    the file and the line.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[BenchRecord] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise InputError(p, "records file not found", "give the .jsonl written by 'edgecut bench'")
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    raw = json.loads(line) if len(line) <= MAX_JSON_BYTES else None
                except json.JSONDecodeError as e:
                    raise InputError(p, f"line {n} is not JSON ({e.msg})",
                                     "a run that was killed mid-write leaves a partial last line: delete it") from None
                except RecursionError:
                    raw = None
                if raw is None or depth(raw) > MAX_DEPTH:
                    raise InputError(p, f"line {n} is not a bench record (longer than {MAX_JSON_BYTES} bytes, or "
                                     f"nested deeper than {MAX_DEPTH} levels)", "give a .jsonl written by 'edgecut bench'")
                if isinstance(raw, dict) and raw.get("schema_version", RECORD_SCHEMA) > RECORD_SCHEMA:
                    raise InputError(p, f"line {n} was written by a newer edgecut "
                                        f"(record schema {raw['schema_version']})", "upgrade edgecut")
                try:
                    rec = BenchRecord.model_validate(raw)
                    rec._source = p
                except ValidationError as e:
                    first = e.errors()[0]
                    where = ".".join(str(x) for x in first["loc"])
                    raise InputError(p, f"line {n} is not a bench record: {where}: {first['msg']}",
                                     "give a .jsonl written by 'edgecut bench'") from None
                out.append(rec)
    return out


def latest(records: Iterable[BenchRecord]) -> list[BenchRecord]:
    """Drop records superseded by a later record of the same measurement (same :attr:`~BenchRecord.key`)."""
    by_key: dict[tuple, BenchRecord] = {}
    for r in records:
        by_key.pop(r.key, None)
        by_key[r.key] = r
    return list(by_key.values())
