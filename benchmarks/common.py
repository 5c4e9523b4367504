"""What every benchmark script shares: where the repository, the real data and models and the results
are, the machine's fingerprint for a record, and writing a record. Scripts run as
``python benchmarks/NAME.py`` and import this module as ``common`` (their own folder is on the path)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ECSSD = SHARED / "data" / "ecssd"
HORSES = SHARED / "data" / "weizmann_horse"
U2NETP = SHARED / "models" / "u2netp.onnx"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"


def machine() -> dict[str, Any]:
    """The fingerprint every record carries: CPU model and flags, cores, library versions, date."""
    from edgecut.env import environment

    env = environment()
    return {"cpu": env.get("cpu"), "backends": env.get("backends"), "edgecut": env.get("edgecut"),
            "date": time.strftime("%Y-%m-%d")}


def write(path: Path, record: Any) -> Path:
    """``record`` as indented JSON at ``path`` (atomically), folders made."""
    from edgecut import io

    io.write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path


def edgecut(*args: Any, log: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Run ``edgecut ARGS`` as a user does (a new process; its output to ``log`` when given); the wall seconds."""
    cmd = [sys.executable, "-m", "edgecut.cli", *(str(a) for a in args)]
    print("$ edgecut " + shlex.join(cmd[3:]), flush=True)
    started = time.perf_counter()
    with (log.open("a") if log else open(os.devnull, "w")) as out:
        p = subprocess.run(cmd, stdout=out if log else None, stderr=subprocess.STDOUT if log else None,
                           env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(f"edgecut {' '.join(cmd[3:4])} failed ({p.returncode})" + (f": see {log}" if log else ""))
    return time.perf_counter() - started
