"""``bench``: measure artifacts through their Runners and write one :class:`BenchRecord` each.

For every model (and every thread count asked for) one record: **latency**, isolated, in fresh worker processes
(:mod:`edgecut.measure.worker`: cold first inference, peak RSS, the model alone on one batch, throughput at each
extra batch size, the end-to-end cut-out of one image file), repeated, the run at the lower quartile of their p50s
kept, and guarded on CPU by the parallel-speedup canary (:mod:`edgecut.measure.canary`); **accuracy**, in this
process, on every image of the data folder at its own resolution, the worst images' cut-outs kept for the html
report; **agreement** with a ``reference`` artifact (mask IoU and max abs difference per image). Records are
appended to the ``.jsonl`` file as each model finishes; ``resume=True`` skips measurements the file already holds.

Each measurement in full, and why the lower quartile: docs/design-decisions.md#bench
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecut import io
from edgecut.artifact import Artifact, ModelSpec, load_artifact
from edgecut.env import default_threads, fingerprint
from edgecut.errors import EdgecutError, InputError
from edgecut.measure.canary import Canary
from edgecut.measure.config import BenchConfig
from edgecut.measure.latency import half_width, kept_half_width, kept_index, quantile_ci, repeat_notes
from edgecut.measure.record import (Accuracy, Agreement, BenchRecord, Hooks, Host, Latency, Memory, Throughput,
                                    WorstImage, append_records, machine_id, new_run_id, read_records)
from edgecut.runtime.base import AtSize, backend_for, spec_at

MAX_DISCARDED = 2  # worker runs measured again because the machine was busy, per kept run at most


@dataclass
class BenchResult:
    records: list[BenchRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the file (resume)


def model_size_mb(art: Artifact) -> float:
    """The model file plus the other files of its manifest (weights .bin, external data), in MiB."""
    files = {art.manifest.model_file, *art.manifest.files}
    return sum((art.path / f).stat().st_size for f in files if (art.path / f).is_file()) / 2**20


def scaled_macs(art: Artifact, spec: ModelSpec) -> int | None:
    """MACs at ``spec``'s size: the manifest's count scaled by the pixel ratio (convolutions scale exactly)."""
    macs = art.manifest.macs
    if macs is None:
        return None
    h0, w0 = art.spec.input_size
    h, w = spec.input_size
    return int(round(macs * (h * w) / (h0 * w0)))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "model"


# --------------------------------------------------------------------------- latency (isolated)


def measure_latency(art: Artifact, spec: ModelSpec, backend: str, threads: int | None, config: BenchConfig,
                    e2e_image: Path | None = None) -> dict[str, Any]:
    """Latency, throughput, end-to-end and peak memory of one model at ``spec``'s size, on ``config.device`` at
    ``config.batch`` (and each of ``config.batches``), in a fresh process unless ``config.isolate`` is off."""
    job = {"artifact": str(art.path), "backend": backend, "device": config.device, "threads": threads,
           "size": list(spec.input_size), "batch": config.batch, "batches": list(config.batches),
           "latency": asdict(config.latency), "e2e_image": str(e2e_image) if e2e_image else None}
    if not config.isolate:
        from edgecut.measure.worker import run_job

        return run_job(job)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgecut.measure.worker"], input=json.dumps(job), text=True,
                          capture_output=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise EdgecutError(f"{art.path}: the latency worker failed: {lines[-1] if lines else 'no message'}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- accuracy and agreement


def _probabilities(runner, spec: ModelSpec, images: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        out.extend(spec.to_probability(runner(spec.preprocess(list(chunk)))))
    return out


def measure_accuracy(runner, spec: ModelSpec, samples, data_name: str, config: BenchConfig, *,
                     cutouts: tuple[Path, Path] | None = None, reference: dict[str, Any] | None = None,
                     progress: bool = True) -> tuple[Accuracy, Agreement | None]:
    """Every metric at each image's own resolution (``config.accuracy_batch`` images a call), the
    ``config.worst`` images and the agreement with ``reference``. ``cutouts`` is (the folder the worst images'
    cut-outs are saved in, that folder as the record names it); None: none saved."""
    from edgecut.measure.accuracy import evaluate
    from edgecut.cutout import compose
    from edgecut.data.folder import load_pair
    from edgecut.metrics import mask_iou

    ious: list[float] = []
    diffs: list[float] = []

    def agree(sample, prob: np.ndarray) -> None:
        ref = reference["probs"][sample.name]
        diffs.append(float(np.abs(prob - ref).max()))
        ious.append(mask_iou(prob >= spec.threshold, ref >= spec.threshold))

    result = evaluate(AtSize(runner, spec), samples, batch_size=config.accuracy_batch, progress=progress,
                      on_output=agree if reference is not None else None, check=False)  # checked once in bench
    by_name = {s.name: s for s in samples}
    worst_rows: list[WorstImage] = []
    for row in result.worst(config.worst):
        entry = WorstImage(name=row["name"], iou=float(row["iou"]), mae=row.get("mae"),
                           image=str(by_name[row["name"]].image))
        if cutouts is not None:
            cutout_dir, cutout_rel = cutouts
            image, _ = load_pair(by_name[row["name"]])
            prob = _probabilities(runner, spec, [image], 1)[0]
            alpha = spec.resize_back(prob, image.shape[:2])
            dest = cutout_dir / f"{_slug(row['name'])}.png"
            io.write_image(dest, compose(image, alpha, "rgba"))
            entry.cutout = str(cutout_rel / dest.name)
        worst_rows.append(entry)
    accuracy = Accuracy(data=data_name, count=result.count, input_size=tuple(spec.input_size),
                        metrics={k: float(v) for k, v in result.metrics.items()}, worst=worst_rows)
    agreement = None
    if reference is not None:
        agreement = Agreement(reference=reference["name"], reference_sha256=reference["sha256"], count=len(ious),
                              mask_iou_mean=float(np.mean(ious)), mask_iou_min=float(np.min(ious)),
                              max_abs_diff=float(np.max(diffs)))
    return accuracy, agreement


# --------------------------------------------------------------------------- the front function


@io.writes_out(file=True)
def bench(models: Sequence[str | os.PathLike | Artifact], out: str | os.PathLike, config: BenchConfig = BenchConfig(),
          *, resume: bool = False, progress: bool = True, names: Sequence[str] | None = None,
          run_id: str | None = None, hooks: Hooks = Hooks()) -> BenchResult:
    """Measure every model; append one record per (model, threads) to the ``.jsonl`` file ``out``.

    ``names`` are display names (default: each artifact folder's name). ``resume`` skips
    measurements ``out`` already holds (same model file, backend, device, precision, size,
    batch, threads, machine). With ``config.precision`` a record is measured again, round after
    round, until its p50 is known to that precision (or ``config.max_repeats``). ``hooks.on_record``
    gets each record as it is written; ``hooks.say`` a line whenever the machine is busy and the
    run waits for it (:mod:`edgecut.measure.canary`). ``run_id`` puts the records in a run begun earlier.
    """
    config.validate()
    out = records_out(out, resume)
    plans = _plans(models, names, config)  # every refusal before the first measurement
    env = fingerprint(config.target)
    done = {r.key for r in read_records(out)} if resume and out.exists() else set()
    run_id = run_id or new_run_id()
    samples, data_name = _samples(config.data, config.split, config.limit)
    e2e_image = (samples[0].image if samples else _synthetic_image(out)) if config.end_to_end else None
    ref = _reference(config, samples, plans) if config.reference is not None else None
    score = _Scorer(samples, data_name, ref, out.with_name(out.stem + "-cutouts"), config, progress)

    result = BenchResult()
    canary = Canary(machine=machine_id(env) if config.canary and config.device == "cpu" else None)
    todo: list[_Timing] = []
    asked: set[tuple] = set()  # the same model twice under two names is measured twice (twins, interleaved)
    for art, name, backend, spec in plans:
        for threads in config.threads:
            rec = _record(art, name, backend, spec, threads, config, env, run_id)
            if rec.key in done or (rec.key, name) in asked:
                result.skipped.append(f"{name} ({backend}, {threads or 'default'} threads)")
                continue
            asked.add((rec.key, name))
            todo.append(_Timing(rec, art, spec, threads))
    while todo:  # round k: the k-th worker run of every record still measuring
        for t in list(todo):
            job = (t.art, t.spec, t.rec.backend, t.threads, config, e2e_image)
            _take_run(t, lambda job=job: measure_latency(*job), canary, config,
                      on_wait=lambda m, name=t.rec.name: hooks.say(f"{name}: {m}") if hooks.say else None)
            if not _enough(t, config):
                continue
            todo.remove(t)
            rec = _finish(t, canary, config)
            score(t, rec)
            append_records(out, [rec])
            result.records.append(rec)
            if hooks.on_record is not None:
                hooks.on_record(rec)
    return result


def records_out(out: str | os.PathLike, resume: bool) -> Path:
    """The ``.jsonl`` records file a bench appends to, refused before anything is measured when it
    is not one, or already holds records and ``resume`` is off."""
    out = Path(out)
    if out.suffix != ".jsonl":
        raise EdgecutError(f"--out {out}: records are JSON lines; give a .jsonl file")
    if out.exists() and not resume and out.stat().st_size > 0:
        raise InputError(out, "already holds records", "pass --resume to add to it (finished measurements are "
                                                      "skipped), or choose a new file")
    return out


def named_models(models, names: Sequence[str] | None) -> list[tuple[Artifact, str]]:
    """(artifact, display name) per model: the names given, else each artifact folder's name."""
    arts = [m if isinstance(m, Artifact) else load_artifact(m) for m in models]
    if not arts:
        raise EdgecutError("give at least one model to bench")
    if names is not None and len(names) != len(arts):
        raise EdgecutError(f"{len(names)} names for {len(arts)} models")
    return list(zip(arts, list(names) if names is not None else [a.path.name for a in arts]))


def _plans(models, names, config: BenchConfig) -> list[tuple[Artifact, str, str, ModelSpec]]:
    """(artifact, display name, backend, spec at the asked size) per model; refuses what cannot be measured."""
    return [(art, name, backend_for(art, config.backend), spec_at(art, config.size))
            for art, name in named_models(models, names)]


class _Scorer:
    """Scores a finished record's model on the data images (and against the reference), in this process."""

    def __init__(self, samples, data_name, reference, cut_root: Path, config: BenchConfig, progress: bool) -> None:
        self.samples, self.data_name, self.reference = samples, data_name, reference
        self.cut_root, self.config, self.progress = cut_root, config, progress

    def __call__(self, t: _Timing, rec: BenchRecord) -> None:
        if not self.samples:
            return
        from edgecut import runtime

        config, ref = self.config, self.reference
        runner = runtime.load(t.art, device=config.device, threads=t.threads, backend=rec.backend)
        slug = _slug(f"{rec.name}-{rec.backend}-{rec.precision}-{t.spec.input_size[0]}x{t.spec.input_size[1]}")
        rec.accuracy, rec.agreement = measure_accuracy(
            runner, t.spec, self.samples, self.data_name, config,
            cutouts=(self.cut_root / slug, Path(self.cut_root.name) / slug),
            reference=ref if ref is not None and ref["sha256"] != t.art.sha256 else None, progress=self.progress)


@dataclass
class _Timing:
    """One record being measured: its worker runs so far and what the canary saw around them."""

    rec: BenchRecord
    art: Artifact
    spec: ModelSpec
    threads: int | None  # as asked (None: the backend's default)
    runs: list[dict[str, Any]] = field(default_factory=list)
    seen: list[float | None] = field(default_factory=list)  # the canary right after each kept run
    waited: float = 0.0
    discarded: int = 0


def _take_run(t: _Timing, run: Callable[[], dict[str, Any]], canary: Canary, config: BenchConfig,
              on_wait: Callable[[str], None] | None = None) -> None:
    """One more worker run for ``t``, taken while the machine's cores are ours if that happens in time
    (:meth:`Canary.guarded`, within what is left of ``config.max_wait_s`` and of the runs that may be
    discarded for this record). Not on GPUs (the canary is about CPU cores).
    """
    if config.device != "cpu" or not config.canary:
        t.runs.append(run())
        return
    got, after, waited, discarded = canary.guarded(
        t.rec.threads, run, max(0.0, config.max_wait_s - t.waited),
        max(0, MAX_DISCARDED * config.repeats - t.discarded), on_wait)
    t.waited += waited
    t.discarded += discarded
    t.runs.append(got)
    t.seen.append(after)
    canary.save()


def _enough(t: _Timing, config: BenchConfig) -> bool:
    """Has ``t`` been measured often enough: ``repeats`` runs, and the precision asked for (or the cap)?"""
    n = len(t.runs)
    if n < config.repeats:
        return False
    if config.precision is None or n >= config.max_repeats:
        return True
    h = kept_half_width([g["latency"]["p50_ms"] for g in t.runs], config.keep)
    return h is not None and h <= config.precision


def _finish(t: _Timing, canary: Canary, config: BenchConfig) -> BenchRecord:
    """The record of ``t``'s runs: the kept run's numbers, the spread of the runs, the canary.

    The kept run is the lower quartile of the runs' p50s by default, not their median; within a run,
    p50 is still the median call. Why, measured: docs/design-decisions.md#bench-kept-run
    """
    rec, runs = t.rec, sorted(t.runs, key=lambda g: g["latency"]["p50_ms"])
    rec.created = BenchRecord.model_fields["created"].default_factory()  # when its last run ended
    kept = kept_index(len(runs), config.keep)
    got = runs[kept]
    rec.threads = got["threads"]
    rec.latency = Latency(**got["latency"])
    if len(runs) > 1:
        rec.latency_runs_ms = p50s = [g["latency"]["p50_ms"] for g in runs]
        disagree, notes = repeat_notes(p50s, kept)
        rec.latency.unstable |= disagree
        rec.notes.extend(notes)
        rec.latency_ci_ms = ci = quantile_ci(p50s, config.keep)
        h = half_width(p50s[kept], ci) if ci is not None else None
        if config.precision is not None and h is not None and h > config.precision:
            rec.latency.unstable = True
            rec.notes.append(f"p50 known to +-{h:.1%} only after {len(runs)} runs (asked +-{config.precision:.1%}): "
                             "the machine's speed wandered; re-measure when it is quiet or allow more --max-repeats")
    rec.throughput = [Throughput(**x) for x in got["throughput"]]
    rec.end_to_end = Latency(**got["end_to_end"]) if got.get("end_to_end") else None
    rec.memory = Memory(**got["memory"])
    rec.notes.extend(got.get("notes", []))
    if config.device == "cpu" and config.canary:
        lowest = min((s for s in t.seen if s is not None), default=None)
        best = canary.best(t.rec.threads)
        rec.host = Host(parallel_speedup=lowest, best_speedup=best, waited_s=round(t.waited, 2),
                        discarded_runs=t.discarded, busy=canary.busy(t.rec.threads, lowest))
        if rec.host.busy:
            rec.latency.unstable = True
            rec.notes.append(_busy_note(rec.host))
    return rec


def _busy_note(host: Host) -> str:
    return (f"measured while the host was taking our cores: parallel speedup {host.parallel_speedup:.2f} against "
            f"{host.best_speedup:.2f} at best (waited {host.waited_s:.0f} s, {host.discarded_runs} run(s) measured "
            "again); re-measure when the machine is quiet")


def _record(art: Artifact, name: str, backend: str, spec: ModelSpec, threads: int | None, config: BenchConfig,
            env: dict[str, Any], run_id: str) -> BenchRecord:
    arch = art.manifest.arch.get("name") if art.manifest.arch else None
    return BenchRecord(run_id=run_id, name=name, artifact=str(art.path), sha256=art.sha256, arch=arch,
                       format=art.manifest.format, precision=art.manifest.precision, backend=backend,
                       device=config.device, target=config.target, input_size=tuple(spec.input_size),
                       batch=config.batch, threads=threads or (default_threads() if config.device == "cpu" else None),
                       params=art.manifest.params, macs=scaled_macs(art, spec), size_mb=model_size_mb(art), env=env)


def _samples(data, split, limit):
    if data is None:
        return [], None
    from edgecut.data.folder import check_pairs, find_samples

    samples = find_samples(data, split)
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise InputError(Path(data), "holds no image/mask pairs" + (f" in split {split}" if split else ""))
    check_pairs(samples)  # before the first measurement, not in the middle of the run
    name = Path(data).name + (f"/{Path(split).stem}" if split else "")
    return samples, name


def _synthetic_image(out: Path) -> Path:
    """One synthetic product photo as a JPEG beside the records, for the end-to-end timing without --data."""
    from edgecut.data.synth import render

    dest = out.with_name(out.stem + "-e2e.jpg")
    if not dest.is_file():
        image, _ = render(0, 400, seed=7)
        io.write_bytes(dest, io.encode_image(image, ".jpg"))
    return dest


def _reference(config: BenchConfig, samples, plans) -> dict[str, Any]:
    """The reference's probabilities on every image, once per run (at the first model's input size)."""
    from edgecut import runtime
    from edgecut.data.folder import load_pair

    reference = config.reference
    art = reference if isinstance(reference, Artifact) else load_artifact(reference)
    sizes = {tuple(spec.input_size) for *_, spec in plans}
    if len(sizes) > 1:
        raise EdgecutError(f"--reference needs one input size for every model, got {sorted(sizes)}; pass --size")
    spec = spec_at(art, next(iter(sizes)))
    runner = runtime.load(art, device=config.device, threads=config.threads[0])
    probs = {s.name: _probabilities(runner, spec, [load_pair(s)[0]], 1)[0] for s in samples}
    return {"name": art.path.name, "sha256": art.sha256, "probs": probs}
