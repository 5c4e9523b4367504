"""Python run as if on another x86 CPU, through QEMU's user-mode emulator (Debian's qemu-user: the
machine's, or the package fetched into the user's cache as ``edgecut target setup arm64`` does).

Machines of this project's kind differ: some CPUs have AVX-512 with VNNI, others (AMD EPYC of
family 25, "EPYC-Milan") AVX2 only, and onnxruntime, oneDNN and torch pick other kernels on each.
QEMU 7.2's TCG emulates AVX, AVX2, FMA and F16C but no AVX-512 and no VNNI, so a process under
``qemu-x86_64 -cpu EPYC-Milan`` runs the AVX2 kernels on any host. numpy's own AVX2 loops are
switched off there: QEMU 7.2 crashes in numpy's AVX2 ``np.maximum(scalar, array)``, and numpy is
not what these tests check. Emulation is about a hundred times slower: keep what runs there small.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CPU = "EPYC-Milan"
needs_qemu = pytest.mark.usefixtures("x86_qemu")  # conftest: the machine's qemu-x86_64, or Debian's fetched


def user_arm64_root() -> Path:
    """The arm64 target's folder in the user's own cache (the tests' edgecut cache is a fresh
    folder each session): built, and qemu fetched, once per machine."""
    return Path(os.environ.get("EDGECUT_ARM64") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "edgecut" / "arm64")


def qemu_x86() -> tuple[str, dict[str, str]]:
    """The machine's qemu-x86_64, else the one in Debian's qemu-user that ``edgecut target setup
    arm64`` fetches into the user's cache (fetched here if it is not there yet); and its environment."""
    system = shutil.which("qemu-x86_64")
    if system:
        return system, {}
    from edgecut.targets import arm64

    root = user_arm64_root()
    binary = str(arm64.fetch_qemu(root) / "qemu-x86_64")
    return binary, arm64.qemu_library_env(root, binary)
NO_AVX512 = ("import numpy._core._multiarray_umath as m; "
             "assert not m.__cpu_features__['AVX512F'], 'the emulated CPU has AVX-512'")


def run_as_avx2(code: str, *args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -c code args...`` on an emulated AVX2-only CPU (it first checks that it sees no AVX-512)."""
    qemu, lib = qemu_x86()
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "AVX2", "OMP_NUM_THREADS": "1", **lib}
    hide = [a for name in lib for a in ("-U", name)]  # a fetched qemu's libraries are not the guest's
    return subprocess.run([qemu, *hide, "-cpu", CPU, sys.executable, "-c", f"{NO_AVX512}\n{code}", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


RUN_MODEL = ("import sys, numpy as np; from edgecut import runtime; "
             "np.save(sys.argv[2], runtime.load(sys.argv[1], threads=1)(np.load(sys.argv[3])))")


def outputs_on_avx2(artifact, batch, tmp_path):
    """What ``artifact``'s Runner returns for ``batch`` on the emulated AVX2-only CPU."""
    import numpy as np

    x, y = tmp_path / "avx2-in.npy", tmp_path / "avx2-out.npy"
    np.save(x, batch)
    done = run_as_avx2(RUN_MODEL, artifact.path, y, x)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(y)
