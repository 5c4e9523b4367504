"""Shared fixtures: tiny models (a few thousand parameters) and tiny data sets (32-64 px)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

TINY_UNET = {"name": "unet", "kwargs": {"width": 4, "depth": 2}}
# the smallest sensible student (~87 k params, 1.4 M MACs at 64 px); options as JSON stores them
TINY_STUDENT = {"name": "mobilenet_v3_small_unet", "kwargs": {"width_mult": 0.25, "decoder_channels": [16, 8, 8, 8]}}


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _canary_cannot_tell(monkeypatch, tmp_path_factory):
    """Bench tests do not wait for a busy host: the parallel-speedup canary answers 'cannot tell'
    (tests/test_canary.py holds the real one), and nothing is remembered in the user's cache."""
    from edgecut.measure import canary

    monkeypatch.setenv("EDGECUT_CACHE", str(tmp_path_factory.getbasetemp() / "edgecut-cache"))
    monkeypatch.setattr(canary, "parallel_speedup", lambda threads, **kw: None)


@functools.lru_cache(maxsize=None)
def cli_command():
    """The click command typer makes of edgecut's app, made once: typer makes it again on every call
    (0.1 s), which is most of the time of a fuzz case (click.testing.CliRunner().invoke takes it)."""
    import typer

    import edgecut.cli  # noqa: F401  (registers the commands)
    from edgecut.cli.app import app  # the module's own, whatever patches edgecut.cli.app

    return typer.main.get_command(app)


def make_tiny_artifact(out: Path, size: int = 32, seed: int = 0):
    from edgecut.models.store import build, save_model

    torch.manual_seed(seed)
    model = build(TINY_UNET).eval()
    return save_model(out, model, TINY_UNET, model.default_spec.with_size(size))


def train_tiny(out: Path, steps: int = 120):
    """TINY_UNET fitted for ``steps`` Adam steps on synthetic 32 px photos (IoU ~0.8 at 120): its
    masks have edges, which parity and quantization tests need. Saved as an artifact at ``out``."""
    import numpy as np

    from edgecut.data.synth import render
    from edgecut.models.store import build, save_model

    torch.set_num_threads(1)  # module fixtures run before the autouse one: same weights on every machine
    torch.manual_seed(0)
    model = build(TINY_UNET)
    spec = model.default_spec.with_size(32)
    pairs = [render(i, 32, seed=5) for i in range(32)]
    x = torch.from_numpy(spec.preprocess([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None] / 255.0).float()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(pairs), (8,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model(out, model.eval(), TINY_UNET, spec)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """TINY_UNET fitted for 120 steps on synthetic 32 px photos (train_tiny): masks with edges."""
    return train_tiny(tmp_path_factory.mktemp("trained") / "unet", steps=120)


def torch_out(art, batch):
    """The torch parent's raw output for a float32 NCHW numpy batch."""
    from edgecut.models.store import load_model

    with torch.no_grad():
        return load_model(art.path).module(torch.from_numpy(batch)).numpy()


def random_batch(h: int, w: int, n: int = 1, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """An untrained tiny U-Net artifact (width 4, depth 2, 32 px spec)."""
    return make_tiny_artifact(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """24 synthetic 32 px product shots with masks and train/val splits."""
    from edgecut.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "data", 24, 32, seed=3, progress=False)


@pytest.fixture(scope="session")
def x86_qemu():
    """qemu-x86_64 for tests/emulated.py (the machine's, or Debian's fetched into the user's cache)."""
    from emulated import qemu_x86

    from edgecut.errors import MissingBackendError

    try:
        return qemu_x86()
    except MissingBackendError as e:
        pytest.skip(f"emulating an AVX2-only CPU: {e}")


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    """The arm64-emu sysroot, built once in the user's own cache (the tests' cache is a fresh folder);
    setup fetches Debian's qemu-user there where the machine has none. Skipped only on a machine
    without Debian's apt tools."""
    import shutil

    from edgecut.targets import arm64

    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("building the arm64 sysroot needs Debian's apt-get and dpkg-deb")
    from emulated import user_arm64_root

    return arm64.setup(user_arm64_root(), say=lambda _: None)


@pytest.fixture(scope="session")
def litert_envs() -> Path:
    """The converter environments' folder in the user's own cache (the tests' edgecut cache is a fresh
    folder each session), with the litert environment built there once per machine."""
    import os

    import edgecut.converters.envs as envs

    folder = Path(os.environ.get("EDGECUT_ENVS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                  / "edgecut" / "envs")
    saved = os.environ.get("EDGECUT_ENVS")
    os.environ["EDGECUT_ENVS"] = str(folder)
    try:
        envs.setup("litert", say=lambda _: None)
    finally:
        if saved is None:
            del os.environ["EDGECUT_ENVS"]
        else:
            os.environ["EDGECUT_ENVS"] = saved
    return folder


@pytest.fixture
def litert_env(litert_envs, monkeypatch) -> Path:
    """litert_envs, and EDGECUT_ENVS pointing at it for this test."""
    monkeypatch.setenv("EDGECUT_ENVS", str(litert_envs))
    return litert_envs


@pytest.fixture
def arm64_env(arm64_root, monkeypatch) -> Path:
    """arm64_root, and EDGECUT_ARM64 pointing at it for the processes a test starts."""
    monkeypatch.setenv("EDGECUT_ARM64", str(arm64_root))
    return arm64_root


@pytest.fixture
def loopback_sshd(tmp_path):
    """An sshd on 127.0.0.1 only, with a throw-away host key and client key (skipped where it cannot
    start): (url, client key, the device's TMPDIR, a folder of this test's own)."""
    import shutil
    import socket
    import subprocess
    import time

    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).is_file() or not shutil.which("ssh-keygen") or not shutil.which("scp"):
        why = "openssh-server and openssh-client are not installed (apt-get install openssh-server openssh-client)"
        if os.environ.get("EDGECUT_REQUIRE_SSH"):  # .ci/run installs them: a skip there would hide a failure
            pytest.fail(why)
        pytest.skip(why)
    d = tmp_path / "sshd"
    d.mkdir()
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {d / 'sshd.pid'}\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
        f"SetEnv TMPDIR={d / 'device-tmp'}\n")  # the device's temporary folders: this test's alone
    (d / "device-tmp").mkdir()
    try:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # its privilege-separation folder
    except OSError:
        pass
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (pytest.fail if os.environ.get("EDGECUT_REQUIRE_SSH") else pytest.skip)(
                f"sshd cannot start here: {proc.stderr.read().decode()[-300:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    import getpass

    yield f"ssh://{getpass.getuser()}@127.0.0.1:{port}", d / "client", d / "device-tmp"
    proc.terminate()
    proc.wait(timeout=10)
