"""The deadline scheduler: each part of the plan runs under its own clock (its budget, cut short by the
run's deadline), writes its JSON record after every measurement, and is skipped (recorded) when
less than its minimum is left; a part that breaks costs the others nothing. ``summary.json`` says
how every part ended."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT

from .plan import Part, Sizes


class Clock:
    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def row(name: str, status: str, **fields: Any) -> dict[str, Any]:
    """One measurement: ok | skipped | failed (a check said no) | error (it broke), with its numbers."""
    return {"name": name, "status": status, **fields}


def error_row(name: str, e: BaseException, **fields: Any) -> dict[str, Any]:
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return row(name, "error", reason=f"{type(e).__name__}: {str(e)[:1500]}", traceback="".join(tb)[-3000:], **fields)


class Record:
    """One part's result file, written after every measurement and once more when the part ends."""

    def __init__(self, run: Run, part: Part) -> None:
        self.run, self.part = run, part
        self.path = run.out / f"{part.name}.json"
        self.started = time.monotonic()
        self.data: dict[str, Any] = {
            "part": part.name, "what": part.what, "command": run.command, "run_id": run.run_id, "smoke": run.smoke,
            "budget_s": part.budget_s, "complete": False, "status": "running", "measurements": [],
            "machine": run.machine}

    def add(self, r: dict[str, Any]) -> dict[str, Any]:
        self.data["measurements"].append(r)
        extra = {k: r[k] for k in ("p50_ms", "images_per_s", "reason") if k in r}
        print(f"  {self.part.name}: {r['name']}: {r['status']} {json.dumps(extra)[:200]}", flush=True)
        self.save()
        return r

    def save(self) -> None:
        from edgecut import io

        self.data["wall_s"] = round(time.monotonic() - self.started, 2)
        io.write_json(self.path, self.data)

    def finish(self, status: str | None = None, **fields: Any) -> None:
        rows = self.data["measurements"]
        if status is None:
            kinds = {r["status"] for r in rows}
            status = "ok" if kinds <= {"ok"} else "skipped" if kinds == {"skipped"} else "partial"
        self.data.update(status=status, complete=True, **fields)
        self.save()


def skip_if_short(clock: Clock, need_s: float) -> str | None:
    """Why a measurement of about ``need_s`` seconds does not fit what is left, or None."""
    if clock.left() < need_s:
        return f"{max(clock.left(), 0):.1f} s left in this part's budget; it needs about {need_s:.1f} s"
    return None


@dataclass
class Run:
    out: Path
    work: Path
    smoke: bool
    sizes: Sizes
    device: str  # cuda | cpu
    command: str
    data: Path | None  # a data set root (images/, masks/, splits/); None: none found
    data_note: str
    deadline: Clock
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))
    machine: dict[str, Any] = field(default_factory=dict)
    _artifacts: dict[str, Any] = field(default_factory=dict)

    def artifact(self, name: str):
        """The freshly initialised teacher or student saved as a torch artifact (for the exporters)."""
        if name not in self._artifacts:
            import torch

            from edgecut.models.store import build, save_model

            torch.manual_seed(0)
            arch = getattr(self.sizes, name)
            model = build(arch).eval()
            dest = self.work / "models" / name
            shutil.rmtree(dest, ignore_errors=True)
            self._artifacts[name] = save_model(dest, model, arch, model.default_spec.with_size(self.sizes.size))
        return self._artifacts[name]

    def split_folder(self, split: str) -> Path | None:
        """A data set folder of links to one split's images and masks (parity, calibration), or None."""
        if self.data is None:
            return None
        from edgecut.data.folder import find_samples

        dest = self.work / "splits" / split
        if not (dest / "images").is_dir():
            for sub in ("images", "masks"):
                (dest / sub).mkdir(parents=True, exist_ok=True)
            for s in find_samples(self.data, split):
                os.symlink(s.image.resolve(), dest / "images" / s.image.name)
                os.symlink(s.mask.resolve(), dest / "masks" / s.mask.name)
        return dest

    def latency(self):
        from edgecut.runtime.timing import LatencyConfig

        return LatencyConfig(**self.sizes.latency)

    def sync(self) -> Callable[[], None] | None:
        import torch

        return torch.cuda.synchronize if self.device == "cuda" else None


def run_parts(run: Run, plan: Sequence[Part], selected: Sequence[str],
              parts: Mapping[str, Callable[[Run, Record, Clock], None]]) -> dict[str, Any]:
    """The ``selected`` parts of ``plan`` in order, each ``parts[name](run, record, clock)``; the summary."""
    from edgecut import io

    summary: dict[str, Any] = {
        "command": run.command, "run_id": run.run_id, "smoke": run.smoke, "device": run.device,
        "deadline_s": run.deadline.total, "plan": [asdict(p) for p in plan], "parts": {},
        "data": {"path": str(run.data) if run.data else None, "note": run.data_note}, "machine": run.machine,
        "git_commit": git_commit(), "script_sha256": code_sha256(), "wall_s": 0.0}
    io.write_json(run.out / "summary.json", summary)  # a run stopped in its first part still says what it was
    started = time.monotonic()
    for part in plan:
        if part.name not in selected:
            continue
        rec = Record(run, part)
        left = run.deadline.left()
        print(f"[{time.monotonic() - started:6.1f} s] {part.name} (budget {part.budget_s:.0f} s, "
              f"{left:.0f} s to the deadline)", flush=True)
        if left < part.min_s:
            rec.finish("skipped", reason=f"{max(left, 0):.1f} s left before the {run.deadline.total:.1f} s deadline; "
                                         f"this part needs at least {part.min_s:.1f} s")
        else:
            clock = Clock(min(part.budget_s, left))
            try:
                parts[part.name](run, rec, clock)
                rec.finish()
            except Exception as e:  # one broken part must not cost the others their device time
                rec.finish("error", error=error_row(part.name, e))
        summary["parts"][part.name] = {"status": rec.data["status"], "wall_s": rec.data["wall_s"],
                                       "budget_s": part.budget_s, "file": rec.path.name}
        summary["wall_s"] = round(time.monotonic() - started, 1)
        io.write_json(run.out / "summary.json", summary)
    print(json.dumps(summary["parts"], indent=1), flush=True)
    return summary


def git_commit() -> str | None:
    try:
        p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() or None if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def code_sha256() -> str:
    """One digest of the program that ran: benchmarks/gpu.py and every module of benchmarks/gpu/."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in (here.with_suffix(".py"), *sorted(here.glob("*.py"))):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
