"""``remove``: cut the background out of images with any artifact, through its Runner.

Any size and image mode goes in; the mask is predicted at the ModelSpec's input size and
resized back to the original. A bad input is reported and skipped; the rest are written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgecut import io
from edgecut.errors import EdgecutError, InputError, NonFiniteOutput, OutputError

Format = Literal["rgba", "mask", "composite"]
COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "green": (0, 177, 64)}


def parse_color(text: str) -> tuple[int, int, int]:
    """'white', '#RRGGBB' or 'R,G,B' -> an RGB tuple."""
    t = text.strip().lower()
    try:
        if t in COLORS:
            return COLORS[t]
        if t.startswith("#") and len(t) == 7:
            return tuple(int(t[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(x) for x in t.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return tuple(parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise EdgecutError(f"--bg {text!r}: not a colour; use a name ({', '.join(COLORS)}), #RRGGBB or R,G,B")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders as the images directly inside them."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        out.extend(io.list_images(p) if p.is_dir() else [p])
    return out


def compose(image: np.ndarray, alpha: np.ndarray, fmt: Format, bg: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An RGB image and an alpha map in [0, 1] -> the requested output array (uint8)."""
    a8 = (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if fmt == "mask":
        return a8
    if fmt == "rgba":
        return np.dstack([image, a8])
    a = alpha[..., None].astype(np.float32)
    out = image.astype(np.float32) * a + np.asarray(bg, np.float32) * (1.0 - a)
    return (out + 0.5).astype(np.uint8)


@dataclass
class RemoveReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def remove_background(inputs: Sequence[str | os.PathLike], runner, out: str | os.PathLike, *,
                      fmt: Format = "rgba", bg: tuple[int, int, int] = (255, 255, 255),
                      progress: bool = True, on_error=None) -> RemoveReport:
    """Write one PNG per input into ``out``. An input that cannot be read, a model output that is not
    finite, or a cut-out that cannot be written is reported (``on_error`` and the report) and the
    rest go on; a bad ``out`` folder is one error before any work."""
    from rich.progress import Progress

    out = io.make_dirs(out)
    files = expand_inputs(inputs)
    sources = {f.resolve() for f in files}
    report = RemoveReport()
    used: set[str] = set()
    spec = runner.spec
    with Progress(transient=True, disable=not progress or len(files) < 2) as prog:
        task = prog.add_task("removing backgrounds", total=len(files))
        for path in files:
            try:
                image = io.read_image(path)
                prob = spec.to_probability(runner(spec.preprocess(image)))[0]
                alpha = spec.resize_back(prob, image.shape[:2])
                dest = out / f"{_unique(path.stem, used)}.png"
                if dest.resolve() in sources:
                    raise InputError(path, f"its cut-out would overwrite an input ({dest})", "choose another --out")
                report.written.append(io.write_image(dest, compose(image, alpha, fmt, bg)))
            except (InputError, OutputError, NonFiniteOutput) as e:
                report.failed.append((path, str(e)))
                if on_error:
                    on_error(path, str(e))
            prog.advance(task)
    return report


def _unique(stem: str, used: set[str]) -> str:
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name
