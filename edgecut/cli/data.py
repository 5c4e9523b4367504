"""``edgecut data synth | composite | check``: make and inspect data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgecut.cli.app import app, console, err
from edgecut.cli.options import SameBytesSeed
from edgecut.data.config import CompositeConfig, SynthConfig
from edgecut.errors import EdgecutError

SYNTH, COMPOSITE = SynthConfig(), CompositeConfig()  # the defaults the options below show

data_app = typer.Typer(no_args_is_help=True, help="Make and inspect data sets.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write images/, masks/, splits/ into.")],
    count: Annotated[int, typer.Option(help="Number of images.")] = SYNTH.count,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = SYNTH.size,
    seed: SameBytesSeed = SYNTH.seed,
    val_fraction: Annotated[float, typer.Option(help="Share of images listed in splits/val.txt.")]
    = SYNTH.val_fraction,
) -> None:
    """Generate synthetic studio product photos with exact masks (deterministic by seed)."""
    from edgecut.data.synth import generate

    try:
        generate(out, count, size, seed, val_fraction=val_fraction, progress=True)
    except (ValueError, FileExistsError) as e:
        raise EdgecutError(str(e)) from None
    console.print(f"wrote {count} images and masks to {out}")


@data_app.command("composite")
def data_composite(
    data: Annotated[Path, typer.Argument(help="Labelled folder (images/ + masks/) whose foregrounds are cut out.")],
    out: Annotated[Path, typer.Option(help="Folder to write images/ and masks/ into.")],
    count: Annotated[int, typer.Option(help="Number of composites.")] = COMPOSITE.count,
    split: Annotated[Optional[str], typer.Option(help="Which images give foregrounds and backgrounds (never "
                                                      "val).")] = COMPOSITE.split,
    backgrounds: Annotated[Optional[Path], typer.Option(help="Other photos to paste on (default: the same images, "
                                                             "their own foreground inpainted away).")] = None,
    seed: SameBytesSeed = COMPOSITE.seed,
) -> None:
    """Paste a labelled folder's foregrounds on other photos' backgrounds: more images for a teacher to label."""
    from edgecut.data.composite import composite

    config = CompositeConfig(count=count, split=split, backgrounds=str(backgrounds) if backgrounds else None,
                             seed=seed)
    composite(data, out, config)
    console.print(f"wrote {count} composites and their masks to {out}")


@data_app.command("check")
def data_check(
    data: Annotated[Path, typer.Argument(help="Data set folder to check (images/ + masks/, optional splits/).")],
    split: Annotated[Optional[str], typer.Option(help="Only this split (a file or a name in splits/).")] = None,
) -> None:
    """Decode every image and mask; list each mask that is not 8-bit grayscale (and how it is read) and
    every pair that cannot be used (exit code 1 when there is one)."""
    from rich.markup import escape

    from edgecut.data.folder import check_data
    from edgecut.io import MASK_ENCODINGS, MASK_RULE

    found = check_data(data, split)
    console.print(f"{len(found.samples)} image/mask pair(s) in {escape(str(data))}"
                  + (f" ({escape(split)})" if split else ""), highlight=False)
    if found.encodings:
        console.print(f"{len(found.encodings)} mask(s) not 8-bit grayscale, read by the rule: {MASK_RULE}",
                      highlight=False, soft_wrap=True)
        for path, encoding in sorted(found.encodings.items()):
            console.print(f"  {escape(str(path))} {MASK_ENCODINGS[encoding]}", highlight=False, soft_wrap=True)
    for line in found.unusable:
        err.print(f"[red]error[/red] {escape(line)}", highlight=False, soft_wrap=True)
    if found.unusable:
        raise typer.Exit(1)
    if not found.encodings:
        console.print("every mask is 8-bit grayscale, as the layout asks", highlight=False)
