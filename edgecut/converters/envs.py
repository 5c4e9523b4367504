"""Converter environments: a converter that cannot live beside edgecut's pinned set runs in a
virtual environment edgecut creates and manages under its cache (``$EDGECUT_CACHE/envs/NAME``, or
``$EDGECUT_ENVS/NAME``).

``edgecut env setup NAME`` builds it once, never during an export: ``python -m venv`` with this Python; a ``.pth``
file that appends edgecut's own site-packages *after* the environment's (torch, numpy and the rest are shared, and
the environment's own versions of the conflicting packages win inside it); ``pip install`` of the converter under
the pins shipped beside this module (``NAME.txt``); ``ready.json`` with the pins and the Python (an environment
whose pins changed is rebuilt). The environment runs edgecut's worker scripts only (plain Python files that import
torch and the converter, never edgecut): the exporter hands them files and reads back files.

Why there is one (the LiteRT converter's pins): docs/design-decisions.md#converter-envs
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from edgecut import io
from edgecut.errors import EdgecutError, MissingBackendError

READY = "ready.json"
PTH = "zz-edgecut-shared.pth"  # sorted last: the environment's own packages come first on sys.path


@dataclass(frozen=True)
class ConverterEnv:
    name: str
    packages: tuple[str, ...]  # what pip installs (the rest follows from the pins)
    purpose: str
    size: str  # what setup downloads, roughly

    @property
    def pins_file(self) -> Path:
        return Path(__file__).with_name(f"{self.name}.txt")

    def pins(self) -> list[str]:
        return [ln.strip() for ln in self.pins_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


ENVS: dict[str, ConverterEnv] = {
    "litert": ConverterEnv("litert", ("litert-torch==0.10.0",), "LiteRT (.tflite) conversion and quantisation: "
                           "litert-torch and ai-edge-quantizer", "about 1 GB (jax, transformers, the LiteRT converter)"),
}


def get(name: str) -> ConverterEnv:
    if name not in ENVS:
        raise EdgecutError(f"no converter environment {name!r} (known: {', '.join(ENVS)})")
    return ENVS[name]


def root(name: str) -> Path:
    """``$EDGECUT_ENVS/NAME`` (environments shared between caches), else ``envs/NAME`` in edgecut's cache."""
    base = os.environ.get("EDGECUT_ENVS")
    return (Path(base) if base else io.cache_dir() / "envs") / name


def python(name: str) -> Path:
    return root(name) / "bin" / "python"


def shared_site() -> str:
    """edgecut's own site-packages (where torch is), shared into every converter environment."""
    return sysconfig.get_paths()["purelib"]


def _ready_record(env: ConverterEnv) -> dict:
    return {"pins": env.pins(), "packages": list(env.packages), "python": sys.version.split()[0],
            "shared_site": shared_site()}


def is_ready(name: str) -> bool:
    env = get(name)
    try:
        ready = json.loads((root(name) / READY).read_text())
    except (OSError, ValueError):
        return False
    return ready == _ready_record(env) and python(name).is_file()


def require(name: str, purpose: str) -> Path:
    """The environment's Python, or one clear error saying how to build it."""
    env = get(name)
    if not is_ready(name):
        raise MissingBackendError(f"{purpose} runs {', '.join(env.packages)} in a converter environment edgecut "
                                  f"manages (it cannot live beside edgecut's pinned packages); build it once with: "
                                  f"edgecut env setup {name} (downloads {env.size})")
    return python(name)


def setup(name: str, *, say=print) -> Path:
    """Build the environment unless it is ready; its folder. Idempotent; a failed build leaves nothing."""
    env = get(name)
    dest = root(name)
    if is_ready(name):
        say(f"{name} environment ready in {dest}")
        return dest
    with _building(dest):  # a second process waits, then finds it ready
        if is_ready(name):
            return dest
        if dest.exists():  # a stale or half-built environment: ready.json is written last
            shutil.rmtree(dest)
        io.make_dirs(dest.parent)
        try:
            say(f"{name}: a virtual environment sharing edgecut's torch ({shared_site()})")
            _run([sys.executable, "-m", "venv", str(dest)])
            site = Path(_run([str(python(name)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                        .strip())
            (site / PTH).write_text(f"import site; site.addsitedir({shared_site()!r})\n")
            if env.packages:
                say(f"{name}: pip install {' '.join(env.packages)} under {env.pins_file.name} ({env.size})")
                _run([str(python(name)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      "-c", str(env.pins_file), *env.packages])
            io.write_json(dest / READY, _ready_record(env))
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    say(f"{name} environment ready in {dest}")
    return dest


@contextlib.contextmanager
def _building(dest: Path):
    """A blocking lock beside ``dest`` for the build (test workers and users may ask at once)."""
    import fcntl

    io.make_dirs(dest.parent)
    with open(dest.parent / f".{dest.name}.build-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise EdgecutError(f"{' '.join(cmd[:4])} ... failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def status() -> dict[str, str]:
    """Each converter environment: ready (its folder) or how to build it (for ``edgecut doctor``)."""
    return {name: (f"ready in {root(name)}" if is_ready(name) else f"not set up: edgecut env setup {name}")
            for name in ENVS}
