"""``edgecut target setup | run | count | parity``: where models run, and a bundle run there."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgecut.cli.app import app, console
from edgecut.cli.options import DEVICE_PYTHON, DevicePython, Identity
from edgecut.errors import EdgecutError

target_app = typer.Typer(no_args_is_help=True, help="Where models run: set up a target, run a bundle there.")
app.add_typer(target_app, name="target")
Where = Annotated[str, typer.Argument(help="local | arm64-emu | ssh://user@host[:port]")]
BundleDir = Annotated[Path, typer.Argument(help="A folder edgecut bundle wrote.")]


@target_app.command("setup")
def target_setup(
    name: Annotated[str, typer.Argument(help="arm64: Debian's aarch64 Python and the runner's aarch64 wheels, "
                                             "run through qemu-user.")],
) -> None:
    """Build a target once (idempotent; cached): for arm64, a sysroot under the edgecut cache."""
    from edgecut.targets import arm64

    if name != "arm64":
        raise EdgecutError(f"target {name!r}: the one target to set up is arm64")
    arm64.setup(say=lambda text: console.print(escape(text), highlight=False))


@target_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def target_run(
    ctx: typer.Context,
    target: Where,
    bundle_dir: BundleDir,
    identity: Identity = None,
    device_python: DevicePython = DEVICE_PYTHON,
) -> None:
    """Run a bundle's runner there: edgecut target run arm64-emu BUNDLE remove photos/ --out cutouts/.
    Over ssh the inputs go to the device and the cut-outs come back; the device's folder is removed."""
    from edgecut.targets.run_bundle import run_bundle

    if not ctx.args:
        raise EdgecutError("give the runner's command after the bundle: remove IMAGES --out DIR, bench or verify")
    p = run_bundle(bundle_dir, list(ctx.args), target, identity=identity, python=device_python)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode:
        raise typer.Exit(p.returncode)


@target_app.command("count")
def target_count(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders (edgecut bundle).")],
    iters: Annotated[int, typer.Option(help="Inferences counted (after two uncounted ones).")] = 3,
) -> None:
    """Guest instructions per inference of each bundle on arm64-emu: exact and repeatable, they rank
    artifacts on aarch64; they are not milliseconds on a device."""
    import json

    from edgecut.targets.arm64 import count_instructions
    from edgecut.targets.bundle import verify_bundle

    for folder in bundles:
        verify_bundle(folder)
        result = {"bundle": str(folder), **count_instructions(folder, iters)}
        sys.stdout.write(json.dumps(result) + "\n")


@target_app.command("parity")
def target_parity(
    target: Where,
    bundle_dir: BundleDir,
    images: Annotated[Path, typer.Option(help="Images (a folder or a file) run on both.")],
    identity: Identity = None,
    device_python: DevicePython = DEVICE_PYTHON,
) -> None:
    """The same images through this machine's Runner and the bundle's runner on TARGET: max abs
    difference of the outputs and mask IoU (ARM kernels differ: NEON MLAS, XNNPACK, ACL)."""
    import json

    from edgecut.measure.target import bundle_parity as parity

    found = parity(bundle_dir, images, target, identity=identity, python=device_python)
    sys.stdout.write(json.dumps(found) + "\n")
