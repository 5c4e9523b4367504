"""``ssh://user@host[:port]``: a bundle run on a device with the device's own Python and runtime.

The bundle (and, for ``remove``, the input images) is copied to a fresh folder on the device, the
runner runs there, what it wrote comes back, and the folder is removed, also when the run fails.
ssh runs with ``BatchMode`` (a key or an agent, never a password prompt); the device's host key
is remembered in the edgecut cache on first use and checked after.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgecut import io
from edgecut.errors import EdgecutError, InputError


@dataclass(frozen=True)
class Device:
    user: str | None
    host: str
    port: int | None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse(url: str) -> Device:
    """``ssh://user@host[:port]`` -> Device, or one clear error."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme != "ssh" or not parts.hostname or port == -1 or parts.path not in ("", "/"):
        raise EdgecutError(f"target {url!r}: write ssh://user@host or ssh://user@host:port")
    return Device(parts.username, parts.hostname, port)


def _options(device: Device, identity: Path | None, known_hosts: Path) -> list[str]:
    opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=15"]
    if identity is not None:
        if not Path(identity).is_file():
            raise InputError(identity, "ssh key not found", "give the private key the device accepts")
        opts += ["-i", str(identity), "-o", "IdentitiesOnly=yes"]
    return opts


def _known_hosts() -> Path:
    return io.make_dirs(io.cache_dir() / "ssh") / "known_hosts"


def run_on_device(url: str, folder: Path, args: list[str], *, identity: Path | None = None,
                  python: str = "python3", timeout: float = 3600) -> subprocess.CompletedProcess:
    """``runner.py ARGS`` of the bundle in ``folder`` on the device at ``url``. For ``remove``, the
    inputs go to the device and the cut-outs come back into the local ``--out``."""
    device = parse(url)
    opts = _options(device, identity, _known_hosts())
    ssh = ["ssh", *opts, *(["-p", str(device.port)] if device.port else []), device.destination]
    scp = ["scp", "-q", "-r", *opts, *(["-P", str(device.port)] if device.port else [])]

    def remote(command: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise EdgecutError(f"{url}: {command.split()[0]} failed ({p.returncode}): "
                               f"{(p.stderr or p.stdout).strip()[-300:]}")
        return p

    def copy(sources: list[str], dest: str) -> None:
        p = subprocess.run([*scp, *sources, dest], capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise EdgecutError(f"{url}: copying failed: {(p.stderr or p.stdout).strip()[-300:]}")

    work = remote("mktemp -d -t edgecut-bundle.XXXXXX").stdout.strip()
    if not work.startswith("/"):
        raise EdgecutError(f"{url}: mktemp gave {work!r}, not a folder")
    at = f"{device.destination}:"
    try:
        copy([str(folder)], f"{at}{work}/bundle")
        args, local_out = _device_args(args, work, lambda files: copy(files, f"{at}{work}/in/"),
                                       lambda: remote(f"mkdir -p {shlex.quote(work + '/in')}"))
        command = f"cd {shlex.quote(work + '/bundle')} && {shlex.quote(python)} runner.py " + \
                  " ".join(shlex.quote(a) for a in args)
        p = remote(command, check=False)
        if local_out is not None and args[0] == "outputs" and p.returncode == 0:
            io.make_dirs(local_out.parent)
            copy([f"{at}{work}/out/{OUTPUTS}"], str(local_out))
        elif local_out is not None and p.returncode in (0, 1):  # 1: some inputs failed, the rest came out
            io.make_dirs(local_out)
            listing = remote(f"ls -A {shlex.quote(work + '/out')}", check=False).stdout.split()
            if listing:
                copy([f"{at}{work}/out/{name}" for name in listing], str(local_out))
        return p
    finally:
        remote(f"rm -rf {shlex.quote(work)}", check=False)


OUTPUTS = "outputs.npz"


def _device_args(args: list[str], work: str, send, make_in) -> tuple[list[str], Path | None]:
    """The runner's arguments with local paths replaced by the device's, and the local --out (the
    cut-outs' folder for ``remove``, the .npz file for ``outputs``). Inputs go to one folder on the
    device, so two inputs with one file name are refused rather than one overwriting the other."""
    if not args or args[0] not in ("remove", "outputs"):
        return args, None
    out, inputs, rest, i = None, [], [], 1
    while i < len(args):
        if args[i] == "--out" and i + 1 < len(args):
            out, i = Path(args[i + 1]), i + 2
        elif args[i].startswith("--out="):
            out, i = Path(args[i].split("=", 1)[1]), i + 1
        elif args[i].startswith("--"):
            rest += args[i:i + 2]
            i += 2
        else:
            inputs.append(Path(args[i]))
            i += 1
    if out is None or not inputs:
        raise EdgecutError(f"{args[0]} needs IMAGES and --out " + ("DIR" if args[0] == "remove" else "FILE.npz"))
    files: list[str] = []
    for item in inputs:
        if not item.exists():
            raise InputError(item, "not found")
        files += [str(p) for p in sorted(item.iterdir()) if p.is_file() and not p.name.startswith(".")] \
            if item.is_dir() else [str(item)]
    seen: dict[str, str] = {}
    for f in files:
        if Path(f).name in seen:
            raise InputError(f, f"has the file name of {seen[Path(f).name]}; on the device both land in one folder",
                             "rename one, or run the two folders separately")
        seen[Path(f).name] = f
    make_in()
    if files:
        send(files)
    dest = f"{work}/out" if args[0] == "remove" else f"{work}/out/{OUTPUTS}"
    return [args[0], f"{work}/in", "--out", dest, *rest], out
