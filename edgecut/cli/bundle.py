"""``edgecut bundle`` (and ``bundle verify``): a model shipped to a device with a standalone runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from edgecut.cli.app import app, console, err
from edgecut.cli.options import OverwriteOut
from edgecut.errors import EdgecutError


@app.command("bundle")
def bundle_cmd(
    items: Annotated[list[str], typer.Argument(help="MODEL (an artifact folder), or: verify BUNDLE_DIR.")],
    target: Annotated[Optional[str], typer.Option(help="Device profile: a name in export_targets/ (jetson-orin-nano, "
                                                       "raspberry-pi-5, ...) or a .yaml path.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the bundle.")] = None,
    overwrite: OverwriteOut = False,
) -> None:
    """Ship a model to a device: its files, a standalone runner (no torch, no edgecut), pinned
    requirements, the device's commands and SHA256SUMS. `edgecut bundle verify DIR` checks one."""
    from edgecut.targets.bundle import bundle, verify_bundle

    if items[0] == "verify":
        if len(items) != 2:
            raise EdgecutError("usage: edgecut bundle verify BUNDLE_DIR")
        sums = verify_bundle(items[1])
        console.print(f"{escape(items[1])}: {len(sums)} file(s) match SHA256SUMS and edgecut.json", highlight=False,
                      soft_wrap=True)  # one line whatever the path: scripts grep it
        return
    if len(items) != 1 or target is None or out is None:
        raise EdgecutError("usage: edgecut bundle MODEL --target PROFILE --out DIR (or: edgecut bundle verify DIR)")
    folder = bundle(items[0], out, target, overwrite=overwrite)
    import json

    info = json.loads((folder / "bundle.json").read_text())
    console.print(f"bundle for {info['profile']['name']} in {escape(str(folder))}: {info['format']} "
                  f"{info['precision']}; on the device: python3 runner.py remove IMAGES --out DIR", highlight=False)
    for note in info["notes"]:
        err.print(f"[yellow]note[/yellow] {escape(note)}", highlight=False)
