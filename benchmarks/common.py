"""What every benchmark script shares: where the repository, the real data and models, the artifacts one
script makes for the next and the results are; the options several scripts take; the environment a record
carries, and writing a record. Scripts run as ``python benchmarks/NAME.py`` and import this module as
``common`` (their own folder is on the path); each writes its records into ``results/NAME/`` (but
rembg_u2netp.py and u2netp_student.py, at the top of ``results/``)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ECSSD = SHARED / "data" / "ecssd"
HORSES = SHARED / "data" / "weizmann_horse"
U2NETP = SHARED / "models" / "u2netp.onnx"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
TEACHER = RUNS / "teacher-ecssd"  # teacher.py's artifact
STUDENT = RUNS / "distill-ecssd" / "masks-only"  # distill.py's student, trained on the masks alone
EXPORTS = RUNS / "export-ecssd"  # export.py's artifacts, one folder each

OPTIONS: dict[str, tuple[type, Any, str]] = {  # the options several scripts take: type, default, help
    "data": (Path, ECSSD, "data set folder (images/, masks/, splits/)"),
    "teacher": (Path, TEACHER, "the trained teacher (benchmarks/teacher.py)"),
    "threads": (int, 2, "threads of torch and the runtimes"),
    "results": (Path, None, "the JSON record this run writes"),
    "no-progress": (bool, False, "no progress bars"),
}


def parser(doc: str, *shared: str, **defaults: Any) -> argparse.ArgumentParser:
    """A script's parser: its docstring's first paragraph, then the OPTIONS named, ``shared`` with their
    default and ``defaults`` (``no_progress`` for ``--no-progress``) with the script's own."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for key in (*shared, *defaults):
        name = key.replace("_", "-")
        kind, default, help = OPTIONS[name]
        default = defaults.get(key, default)
        if kind is bool:
            ap.add_argument(f"--{name}", action="store_true", help=help)
        else:
            ap.add_argument(f"--{name}", type=kind, default=default, help=help)
    return ap


def command(script: str, argv: Sequence[str] | None) -> str:
    """The command a record carries: ``python benchmarks/SCRIPT ARGS`` (this process's arguments without ``argv``)."""
    return f"python benchmarks/{Path(script).name} " + shlex.join(argv if argv is not None else sys.argv[1:])


def rel(path: Path) -> str:
    """``path`` from the repository's root where it lies inside it, else as it is."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def environment(torch_threads: bool = False) -> dict[str, Any]:
    """The environment a record carries (``edgecut.env.environment``: CPU model and flags, library versions),
    with torch's thread count where asked."""
    from edgecut.env import environment as probe

    env = probe()
    if torch_threads:
        import torch

        env["torch_threads"] = torch.get_num_threads()
    return env


def machine() -> dict[str, Any]:
    """The fingerprint every record carries: CPU model and flags, cores, library versions, date."""
    env = environment()
    return {"cpu": env.get("cpu"), "backends": env.get("backends"), "edgecut": env.get("edgecut"),
            "date": time.strftime("%Y-%m-%d")}


def write(path: Path, record: Any) -> Path:
    """``record`` as indented JSON at ``path`` (atomically), folders made."""
    from edgecut import io

    io.write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {rel(path)}", flush=True)
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
