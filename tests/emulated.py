"""Python run as if on another x86 CPU, through QEMU's user-mode emulator (Debian's qemu-user).

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

import pytest

QEMU = shutil.which("qemu-x86_64")
CPU = "EPYC-Milan"
needs_qemu = pytest.mark.skipif(QEMU is None, reason="emulating an AVX2-only CPU needs Debian's qemu-user "
                                                     "(apt-get install qemu-user)")
NO_AVX512 = ("import numpy._core._multiarray_umath as m; "
             "assert not m.__cpu_features__['AVX512F'], 'the emulated CPU has AVX-512'")


def run_as_avx2(code: str, *args: object, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -c code args...`` on an emulated AVX2-only CPU (it first checks that it sees no AVX-512)."""
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": "AVX2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([QEMU, "-cpu", CPU, sys.executable, "-c", f"{NO_AVX512}\n{code}", *map(str, args)],
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
