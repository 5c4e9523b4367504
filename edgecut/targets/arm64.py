"""``arm64-emu``: real aarch64 runtimes on an x86 machine through Debian's ``qemu-user``.

``setup`` builds, once and idempotently, a sysroot under the cache (``$EDGECUT_CACHE/arm64``,
default ``~/.cache/edgecut/arm64``): Debian's arm64 Python 3.11 and the libraries it needs,
downloaded with apt for the arm64 architecture into private lists (no multiarch change to the
machine) and unpacked with ``dpkg-deb -x``; and the aarch64 wheels of the device runner's
packages (the versions a bundle pins) installed with ``pip --platform``. A ``/proc/cpuinfo`` an
aarch64 ONNX Runtime can parse sits inside the prefix (the host's x86 one makes it crash).

Times measured here are emulated time: they rank nothing and are never device time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from edgecut import io
from edgecut.errors import EdgecutError, MissingBackendError

ROOT_PACKAGES = ("python3.11", "libstdc++6", "libgomp1")
SKIP_PACKAGES = {"dpkg", "install-info", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "tar", "mailcap",
                 "mime-support"}  # pulled in by Debian's tooling, not needed to run Python
WHEELS = ("numpy", "pillow", "opencv-python-headless", "onnxruntime")
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""
READY = "ready.json"


def default_root() -> Path:
    base = os.environ.get("EDGECUT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecut"
    return Path(base) / "arm64"


def qemu() -> str:
    path = shutil.which("qemu-aarch64")
    if not path:
        raise MissingBackendError("qemu-aarch64 is not installed: apt-get install qemu-user (Debian's, 7.2 or newer)")
    return path


def pins() -> list[str]:
    """The runner's packages at the versions installed here (what a bundle's requirements.txt pins)."""
    out = []
    for name in WHEELS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def is_ready(root: Path | None = None) -> bool:
    root = root or default_root()
    try:
        ready = json.loads((root / READY).read_text())
    except (OSError, ValueError):
        return False
    return ready.get("wheels") == pins() and (root / "sysroot" / "usr" / "bin" / "python3.11").is_file()


def setup(root: Path | None = None, *, say=print) -> Path:
    """Build the sysroot and wheels under ``root`` unless they are there already; the root."""
    root = Path(root or default_root())
    qemu()
    if is_ready(root):
        say(f"arm64 sysroot ready in {root}")
        return root
    io.make_dirs(root)
    with io.exclusive(root / "sysroot"):
        work = Path(tempfile.mkdtemp(prefix=".setup-", dir=root))
        try:
            say("arm64: Debian packages (apt, arm64 lists kept in the cache)")
            _sysroot(root, work)
            say(f"arm64: aarch64 wheels ({', '.join(pins())})")
            _wheels(work)
            (work / "sysroot" / "proc").mkdir(exist_ok=True)
            (work / "sysroot" / "proc" / "cpuinfo").write_text(CPUINFO)
            for name in ("sysroot", "site"):
                if (root / name).exists():
                    shutil.rmtree(root / name)
                os.replace(work / name, root / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        probe = run_python(["-c", "import numpy, PIL, cv2, onnxruntime, platform; print(platform.machine())"],
                           root=root, check=False, ready=False)
        if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
            raise EdgecutError(f"the arm64 sysroot in {root} does not run its packages: "
                               f"{(probe.stderr or probe.stdout).strip()[-300:]}")
        io.write_json(root / READY, {"wheels": pins(), "python": "3.11", "qemu": qemu()})
    say(f"arm64 sysroot ready in {root}")
    return root


def _apt(root: Path) -> list[str]:
    apt = root / "apt"
    for d in (apt / "lists" / "partial", apt / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    return ["-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Architecture=arm64", "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1",
            "-o", "Dir::State::status=/dev/null"]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise EdgecutError(f"{' '.join(cmd[:2])} failed while building the arm64 sysroot: "
                           f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def _sysroot(root: Path, work: Path) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise MissingBackendError("building the arm64 sysroot needs Debian's apt-get and dpkg-deb")
    opts = _apt(root)
    _run(["apt-get", *opts, "update"])
    tree = _run(["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                 "--no-breaks", "--no-replaces", "--no-enhances", *ROOT_PACKAGES])
    names = sorted({ln.strip() for ln in tree.splitlines() if ln and not ln.startswith((" ", "<"))} - SKIP_PACKAGES)
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", *opts, "download", *names], cwd=debs)
    sysroot = work / "sysroot"
    sysroot.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)])


def _wheels(work: Path) -> None:
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(work / "site"), *platforms,
          "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *pins()])


def python_command(root: Path | None = None, *, ready: bool = True) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment of the emulated aarch64 Python (``ready``: refuse an unfinished sysroot)."""
    root = Path(root or default_root())
    if ready and not is_ready(root):
        raise EdgecutError(f"no arm64 sysroot in {root}: run edgecut target setup arm64 first (once, a few minutes)")
    sysroot = root / "sysroot"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "site"), "ORT_DISABLE_TELEMETRY": "1",
           "PYTHONNOUSERSITE": "1", "HOME": os.environ.get("HOME", "/tmp")}
    return [qemu(), "-L", str(sysroot), str(sysroot / "usr" / "bin" / "python3.11")], env


def run_python(args: list[str], *, root: Path | None = None, cwd: Path | None = None, check: bool = True,
               timeout: float = 1800, ready: bool = True) -> subprocess.CompletedProcess:
    """``python3.11 ARGS`` on the emulated aarch64 Python."""
    cmd, env = python_command(root, ready=ready)
    p = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise EdgecutError(f"the emulated aarch64 Python failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p
