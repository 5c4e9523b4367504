"""Running a bundle's device runner on a target: ``local`` (this Python), ``arm64-emu`` (the
emulated aarch64 Python of :mod:`edgecut.targets.arm64`) or ``ssh://user@host[:port]`` (a device,
:mod:`edgecut.targets.ssh`). The bundle is verified first, and a ``bench`` result says where it
ran: emulated time is labelled as such, never as device time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgecut.errors import EdgecutError
import edgecut.targets.arm64 as arm64
import edgecut.targets.ssh as ssh
from edgecut.targets.bundle import verify_bundle

TARGETS = ("local", "arm64-emu")
EMULATED = "emulated (qemu-user on x86): for parity and for running the aarch64 runtimes, not device time"


def run_bundle(folder: str | os.PathLike, args: list[str], target: str = "local", *, root: Path | None = None,
               identity: Path | None = None, python: str = "python3",
               timeout: float = 3600) -> subprocess.CompletedProcess:
    """``runner.py ARGS`` of the bundle in ``folder`` on ``target``; its output, bench lines labelled.
    ``identity`` and ``python``: the ssh key and the device's Python, for ``ssh://`` targets."""
    if target not in TARGETS and not target.startswith("ssh://"):
        raise EdgecutError(f"target {target!r}: use {', '.join(TARGETS)} or ssh://user@host[:port]")
    folder = Path(folder).resolve()
    verify_bundle(folder)
    if args[:1] == ["count"]:
        raise EdgecutError("count runs under the counting emulator: edgecut target count BUNDLE (arm64-emu)")
    if target.startswith("ssh://"):
        return _labelled(ssh.run_on_device(target, folder, args, identity=identity, python=python,
                                           timeout=timeout), target)
    if target == "local":
        cmd, env = [sys.executable, "-S"], {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    else:
        cmd, env = arm64.python_command(root)
    p = subprocess.run([*cmd, str(folder / "runner.py"), *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    return _labelled(p, target)


def _labelled(p: subprocess.CompletedProcess, target: str) -> subprocess.CompletedProcess:
    lines = []
    for line in p.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if isinstance(record, dict) and "p50_ms" in record:
            record["target"] = target
            if target == "arm64-emu":
                record["time"] = EMULATED
        lines.append(json.dumps(record))
    p.stdout = "\n".join(lines) + ("\n" if lines else "")
    return p
