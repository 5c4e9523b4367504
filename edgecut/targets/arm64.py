"""``arm64-emu``: real aarch64 runtimes on an x86 machine through Debian's ``qemu-user`` (the
machine's, or, where it has none, Debian's package fetched into the cache and run from there).

``setup`` builds, once and idempotently, a sysroot under the cache (``$EDGECUT_CACHE/arm64``, default
``~/.cache/edgecut/arm64``): Debian's arm64 Python 3.11 and its libraries, unpacked with ``dpkg-deb -x``; the
aarch64 wheels of the device runner's packages, installed with ``pip --platform``; and ``insn_count.c``, a TCG
plugin counting the guest instructions between two markers the runner's ``count`` command sets. With one thread,
address randomisation off (``setarch -R``) and the bundle at a fixed path, the count of an inference is the same on
every run: a deterministic ARM cost that ranks artifacts. It is not milliseconds on a device.

How the sysroot is fetched, and what the count is for: docs/design-decisions.md#arm64-emu
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgecut import io
from edgecut.errors import EdgecutError, MissingBackendError
from edgecut.formats import BUNDLED
from edgecut.formats import FORMATS as TABLE
from edgecut.targets.bundle import BASE_PACKAGES, pinned

ROOT_PACKAGES = ("python3.11", "libstdc++6", "libgomp1", "libfaketime")
SKIP_PACKAGES = {"dpkg", "install-info", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "tar", "mailcap",
                 "mime-support"}  # pulled in by Debian's tooling, not needed to run Python
# Debian 12's glibc is 2.36: any manylinux tag up to 2.35 runs (OpenVINO's aarch64 wheel is manylinux_2_35)
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_31_aarch64", "manylinux_2_35_aarch64")  # ai-edge-litert's aarch64 wheel is manylinux_2_27
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
# the emulated core: a Cortex-A76 (Raspberry Pi 5, most phones' big cores): NEON and dot product, no SVE.
# qemu's default "max" CPU has 512-bit SVE, which aarch64 onnxruntime uses, and which those devices lack.
CPU = "cortex-a76"
PLUGIN = "libinsn_count.so"
QEMU_BIN = Path("qemu") / "usr" / "bin" / "qemu-aarch64"
# counting runs on a made-up clock that moves 1 ms per reading: onnxruntime reads the real-time clock
# four times an inference and its instructions depend on the values (a loaded host moved counts ~1e-5)
FAKETIME_LIB = "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"
FAKETIME = "@2026-01-01 00:00:00 i0.001"


def default_root() -> Path:
    """``$EDGECUT_ARM64`` (a sysroot shared between caches), else ``arm64`` in edgecut's cache."""
    return Path(os.environ["EDGECUT_ARM64"]) if os.environ.get("EDGECUT_ARM64") else io.cache_dir() / "arm64"


def qemu(root: Path | None = None) -> str:
    """The qemu-aarch64 the target runs: the one ``setup`` fetched into the cache (where the machine
    had none), else the machine's."""
    fetched = Path(root or default_root()) / QEMU_BIN
    if fetched.is_file():
        return str(fetched)
    path = shutil.which("qemu-aarch64")
    if not path:
        raise MissingBackendError("no qemu-aarch64: run edgecut target setup arm64 (it fetches Debian's qemu-user into "
                                  "the cache), or apt-get install qemu-user")
    return path


def _qemu_env(root: Path, qemu_path: str) -> dict[str, str]:
    """A fetched qemu finds its libraries in the cache (and the guest is not told: ``-U`` below)."""
    if not qemu_path.startswith(str(root)):
        return {}
    base = root / "qemu"
    return {"LD_LIBRARY_PATH": os.pathsep.join(str(base / d) for d in ("usr/lib/x86_64-linux-gnu",
                                                                        "lib/x86_64-linux-gnu", "usr/lib", "lib"))}


FORMATS = BUNDLED  # the sysroot holds every runtime of the bundle runner: onnxruntime's, OpenVINO's, ncnn's and ai-edge-litert's aarch64 wheels


def pins() -> list[str]:
    """The runner's packages for every bundle format, pinned as a bundle's requirements.txt pins them."""
    return pinned(tuple(dict.fromkeys((*BASE_PACKAGES, *(TABLE[f].device_package for f in FORMATS)))))


def is_ready(root: Path | None = None) -> bool:
    root = root or default_root()
    try:
        ready = json.loads((root / READY).read_text())
    except (OSError, ValueError):
        return False
    try:
        emulator = qemu(root)
    except MissingBackendError:
        return False
    sysroot = root / "sysroot"
    return ready.get("wheels") == pins() and ready.get("plugin_source") == _plugin_source() \
        and ready.get("qemu") == emulator and (sysroot / "usr" / "bin" / "python3.11").is_file() \
        and (sysroot / FAKETIME_LIB.lstrip("/")).is_file() and (root / "plugin" / PLUGIN).is_file()


def _plugin_source() -> str:
    return io.sha256_file(Path(__file__).with_name("insn_count.c"))


def setup(root: Path | None = None, *, say=print) -> Path:
    """Build the sysroot and wheels under ``root`` unless they are there already; the root."""
    root = Path(root or default_root())
    if is_ready(root):
        say(f"arm64 sysroot ready in {root}")
        return root
    io.make_dirs(root)
    with io.exclusive(root / "sysroot"):
        if is_ready(root):  # another process built it while this one waited
            say(f"arm64 sysroot ready in {root}")
            return root
        work = Path(tempfile.mkdtemp(prefix=".setup-", dir=root))
        try:
            if not (root / QEMU_BIN).is_file() and not shutil.which("qemu-aarch64"):
                say("arm64: Debian's qemu-user (the machine has none; kept in the cache, the machine unchanged)")
                fetch_qemu(root)
            say("arm64: Debian packages (apt, arm64 lists kept in the cache)")
            _sysroot(root, work)
            say(f"arm64: aarch64 wheels ({', '.join(pins())})")
            _wheels(work)
            (work / "sysroot" / "proc").mkdir(exist_ok=True)
            (work / "sysroot" / "proc" / "cpuinfo").write_text(CPUINFO)
            say("arm64: the instruction-counting plugin (qemu's plugin header from Debian's source package)")
            _plugin(root, work)
            for name in ("sysroot", "site", "plugin"):
                if (root / name).exists():
                    shutil.rmtree(root / name)
                os.replace(work / name, root / name)
            _compile(root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        imports = "numpy, PIL, cv2, onnxruntime, openvino, ncnn, ai_edge_litert.interpreter, platform"
        probe = run_python(["-c", f"import {imports}; print(platform.machine())"], root=root, check=False, ready=False)
        if probe.returncode != 0 or probe.stdout.strip() != "aarch64":
            raise EdgecutError(f"the arm64 sysroot in {root} does not run its packages: "
                               f"{(probe.stderr or probe.stdout).strip()[-300:]}")
        io.write_json(root / READY, {"wheels": pins(), "plugin_source": _plugin_source(), "python": "3.11",
                                     "qemu": qemu(root), "qemu_version": _qemu_version(root)})
    say(f"arm64 sysroot ready in {root}")
    return root


def fetch_qemu(root: Path | None = None) -> Path:
    """Debian's qemu-user for this machine's architecture (all its emulators: qemu-aarch64,
    qemu-x86_64, ...), and the libraries it needs that the machine lacks, unpacked under
    ``root/qemu`` once (private apt lists; nothing installed). The folder of the binaries."""
    root = Path(root or default_root())
    if not (root / QEMU_BIN).is_file():
        if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
            raise MissingBackendError("fetching qemu-user needs Debian's apt-get and dpkg-deb (or: apt-get install "
                                      "qemu-user)")
        with io.exclusive(root / "qemu"):
            if not (root / QEMU_BIN).is_file():
                work = Path(tempfile.mkdtemp(prefix=".qemu-", dir=io.make_dirs(root)))
                try:
                    _fetch_qemu(root, work)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    return (root / QEMU_BIN).parent


def qemu_library_env(root: Path | None, binary: str) -> dict[str, str]:
    """The environment a qemu binary from :func:`fetch_qemu` needs (none for the machine's own)."""
    return _qemu_env(Path(root or default_root()), binary)


def _fetch_qemu(root: Path, work: Path) -> None:
    opts = _apt(root / "apt-host")  # this machine's architecture
    names = _depends(opts, ("qemu-user",))
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *names], capture_output=True,
                               text=True).stdout.splitlines()
    have = {ln.split()[0] for ln in installed if ln.endswith(" installed")}
    debs = work / "qemu-debs"
    debs.mkdir()
    _run(["apt-get", *opts, "download", *[n for n in names if n == "qemu-user" or n not in have]], cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(work / "qemu")])
    qemu_deb = next(debs.glob("qemu-user_*.deb"))
    (work / "qemu" / "qemu-user.version").write_text(_deb_source_version(qemu_deb))
    if (root / "qemu").exists():
        shutil.rmtree(root / "qemu")
    os.replace(work / "qemu", root / "qemu")
    p = subprocess.run([str(root / QEMU_BIN), "--version"], capture_output=True, text=True,
                       env={**os.environ, **_qemu_env(root, str(root / QEMU_BIN))})
    if p.returncode != 0:
        raise EdgecutError(f"the fetched qemu-aarch64 in {root / 'qemu'} does not run: {(p.stderr or p.stdout)[-300:]}")


def _deb_source_version(deb: Path) -> str:
    """The source version of a .deb (a binary-only rebuild, '+b3', has its source's in the Source field)."""
    fields = _run(["dpkg-deb", "-f", str(deb), "Source", "Version"])
    source = next((ln.split(":", 1)[1].strip() for ln in fields.splitlines() if ln.startswith("Source:")), "")
    version = next(ln.split(":", 1)[1].strip() for ln in fields.splitlines() if ln.startswith("Version:"))
    return source[source.index("(") + 1:source.index(")")] if "(" in source else version


def _qemu_version(root: Path) -> str:
    """The Debian source version of the qemu the target runs (its plugin header must match it)."""
    fetched = root / "qemu" / "qemu-user.version"
    if (root / QEMU_BIN).is_file() and fetched.is_file():
        return fetched.read_text().strip()
    return _run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-user"]).strip()


def _apt(folder: Path, *extra: str, status: bool = True) -> list[str]:
    """apt options for private package lists and downloads kept in ``folder`` (nothing of the
    machine's apt state is read or changed; ``status``: no installed packages assumed either);
    ``extra``: more ``-o`` settings."""
    for d in (folder / "lists" / "partial", folder / "cache" / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    settings = (f"Dir::State::Lists={folder / 'lists'}", f"Dir::Cache={folder / 'cache'}", *extra,
                "Debug::NoLocking=1", *(("Dir::State::status=/dev/null",) if status else ()))
    return [a for setting in settings for a in ("-o", setting)]


def _depends(opts: list[str], packages: tuple[str, ...]) -> list[str]:
    """``packages`` and everything they depend on, recursively (no recommends), after updating the lists."""
    _run(["apt-get", *opts, "update"])
    tree = _run(["apt-cache", *opts, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                 "--no-breaks", "--no-replaces", "--no-enhances", *packages])
    return sorted({ln.strip() for ln in tree.splitlines() if ln and not ln.startswith((" ", "<"))})


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        raise EdgecutError(f"{' '.join(cmd[:2])} failed while building the arm64 sysroot: "
                           f"{(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def _sysroot(root: Path, work: Path) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise MissingBackendError("building the arm64 sysroot needs Debian's apt-get and dpkg-deb")
    opts = _apt(root / "apt", "APT::Architecture=arm64", "APT::Architectures::=arm64")
    names = sorted(set(_depends(opts, ROOT_PACKAGES)) - SKIP_PACKAGES)
    debs = work / "debs"
    debs.mkdir()
    _run(["apt-get", *opts, "download", *names], cwd=debs)
    sysroot = work / "sysroot"
    sysroot.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)])


def _compile(root: Path) -> None:
    """Byte-compile the emulated Python's modules once (with this 3.11, whose .pyc format is the
    same), so no run writes .pyc files and every run starts from the same state."""
    import compileall

    if sys.version_info[:2] != (3, 11):
        return  # the emulated Python compiles them on first use instead
    for folder in (root / "sysroot" / "usr" / "lib" / "python3.11", root / "site"):
        compileall.compile_dir(str(folder), quiet=2, workers=1)


def _plugin(root: Path, work: Path) -> None:
    """qemu-plugin.h of the installed qemu-user's source version, and the plugin built against it."""
    import tarfile

    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise MissingBackendError("building the instruction-counting plugin needs a C compiler: apt-get install gcc")
    version = _qemu_version(root)
    src = root / "apt" / "src"
    opts = _apt(src, f"Dir::Etc::SourceList={src / 'sources.list'}", "Dir::Etc::SourceParts=/nonexistent",
                status=False)
    (src / "sources.list").write_text("".join(f"deb-src http://deb.debian.org/{repo} main\n" for repo in (
        "debian bookworm", "debian bookworm-updates", "debian-security bookworm-security")))
    _run(["apt-get", *opts, "update"])
    download = work / "qemu-src"
    download.mkdir()
    _run(["apt-get", *opts, "source", "--download-only", f"qemu={version}"], cwd=download)
    orig = next(download.glob("qemu_*.orig.tar.*"), None)
    if orig is None:
        raise EdgecutError(f"Debian's qemu {version} source has no .orig tarball in {download}")
    include = work / "plugin-include"
    include.mkdir()
    with tarfile.open(orig) as tar:
        member = next((m for m in tar if m.name.endswith("include/qemu/qemu-plugin.h")), None)
        if member is None:
            raise EdgecutError(f"{orig.name} holds no include/qemu/qemu-plugin.h")
        (include / "qemu-plugin.h").write_bytes(tar.extractfile(member).read())
    (work / "plugin").mkdir()
    _run([cc, "-shared", "-fPIC", "-O2", "-Wall", f"-I{include}", "-o", str(work / "plugin" / PLUGIN),
          str(Path(__file__).with_name("insn_count.c"))])


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
    emulator = qemu(root)
    lib = _qemu_env(root, emulator)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "site"), "ORT_DISABLE_TELEMETRY": "1",
           "PYTHONNOUSERSITE": "1", "HOME": os.environ.get("HOME", "/tmp"), **lib}
    hide = [a for name in lib for a in ("-U", name)]  # the fetched qemu's libraries are not the guest's
    return [emulator, *hide, "-cpu", CPU, "-L", str(sysroot), str(sysroot / "usr" / "bin" / "python3.11")], env


def run_python(args: list[str], *, root: Path | None = None, cwd: Path | None = None, check: bool = True,
               timeout: float = 1800, ready: bool = True) -> subprocess.CompletedProcess:
    """``python3.11 ARGS`` on the emulated aarch64 Python."""
    cmd, env = python_command(root, ready=ready)
    p = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise EdgecutError(f"the emulated aarch64 Python failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p


STAGES_KEPT = 8  # bundle copies kept for counting: a recount of a recent artifact is the same path, no copy


def _prune_stages(parent: Path, keep: Path) -> None:
    """Drop all but the STAGES_KEPT most recently made stage folders (they are copies of bundles)."""
    stages = sorted((d for d in parent.iterdir() if d.is_dir() and d != keep), key=lambda d: d.stat().st_mtime)
    for old in stages[:max(0, len(stages) - (STAGES_KEPT - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def count_instructions(folder: Path, iters: int = 3, *, root: Path | None = None) -> dict:
    """Guest instructions per inference of the bundle in ``folder`` on the emulated aarch64 CPU:
    the runner's ``count`` between its two markers, divided by ``iters``. The bundle runs from a
    fixed folder in the cache, with one thread, on one host CPU (onnxruntime asks ``getcpu``),
    with address randomisation off, qemu's random numbers seeded and a made-up clock (libfaketime,
    1 ms a reading), so a second run gives the same number on a quiet host, and one within about 1e-4
    of it on a loaded one (the drift left is measured in benchmarks/README.md)."""
    root = Path(root or default_root())
    cmd, env = python_command(root)
    plugin = root / "plugin" / PLUGIN
    setarch = shutil.which("setarch")
    if not setarch:
        raise MissingBackendError("counting instructions needs setarch (util-linux) to turn address randomisation off")
    import hashlib

    # one fixed folder per bundle content, kept: the same path, files and directory order on every run
    key = hashlib.sha256((Path(folder) / "SHA256SUMS").read_bytes()).hexdigest()[:16]
    stage = root / "count" / key
    with io.exclusive(stage):
        if not (stage / "bundle" / "SHA256SUMS").is_file():
            shutil.rmtree(stage, ignore_errors=True)
            io.make_dirs(stage)
            shutil.copytree(folder, stage / "bundle")
            _prune_stages(root / "count", keep=stage)
        out = stage / "counts.txt"
        env = {**env, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "PYTHONDONTWRITEBYTECODE": "1"}
        clock = ["-E", f"LD_PRELOAD={FAKETIME_LIB}", "-E", f"FAKETIME={FAKETIME}"]  # the guest's, not qemu's
        argv = [setarch, "x86_64", "-R", cmd[0], "-seed", "0", "-plugin", f"{plugin},out={out}", *clock, *cmd[1:],
                "runner.py", "count", "--iters", str(iters)]
        cpu = min(os.sched_getaffinity(0))  # onnxruntime asks getcpu() and takes per-CPU paths: always the same one
        p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=stage / "bundle",
                           preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        if p.returncode != 0:
            raise EdgecutError(f"counting on arm64-emu failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
        lines = out.read_text().splitlines()
        out.unlink()
    marks = [int(ln.split()[1]) for ln in lines if ln.startswith("mark ")]
    total = next(int(ln.split()[1]) for ln in lines if ln.startswith("total "))
    if len(marks) != 2:
        raise EdgecutError(f"the counting plugin saw {len(marks)} markers, not 2 (is the bundle's runner current?)")
    exact = json.loads((Path(folder) / "edgecut.json").read_text()).get("format") != "openvino"
    note = ("guest instructions retired per inference under qemu-user: a deterministic cost that ranks "
            "artifacts on aarch64, not time on a device")
    if not exact:
        note += ("; OpenVINO's thread pool wakes and waits even on one thread, so its counts repeat to about "
                 "0.1%, not exactly")
    return {"instructions_per_inference": (marks[1] - marks[0]) // iters, "iterations": iters,
            "instructions_process": total, "threads": 1, "target": "arm64-emu", "exact": exact, "note": note}
