"""The html report: one self-contained page (no external assets).

The page holds the same table as the markdown (markers and footnotes included), the Pareto plot
as a base64 PNG, and per distinct artifact (by sha256) a strip of its worst cut-outs: the RGBA
PNGs that ``accuracy.worst[*].cutout`` names (relative to the records file's folder), shrunk to
thumbnails and shown over a checkerboard so transparency is visible. A cut-out that is missing
or unreadable is skipped with a note. All text is escaped.
"""

from __future__ import annotations

import base64
import html
import io as _stdio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgecut.measure.record import BenchRecord, WorstImage
from edgecut.io import MAX_PIXELS
from edgecut.report.table import Report, Row

THUMB_HEIGHT = 160  # px; larger cut-outs are shrunk to this height, smaller ones kept as they are
MAX_THUMBS = 6  # per artifact

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .3em; }
ul.summary { list-style: none; padding: 0; margin: 0 0 .8em 0; }
p.how, ul.notes, ul.footnotes, p.caption, p.missing { color: #555; font-size: .92em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; white-space: nowrap; }
th { background: #f4f4f4; text-align: left; }
td.num, th.num { text-align: right; }
tr.baseline td { font-weight: 600; background: #f3f8ff; }
tr.other-machine td { color: #777; font-style: italic; }
img.plot { max-width: 100%; border: 1px solid #eee; }
div.strip { display: flex; flex-wrap: wrap; gap: 10px; margin: .4em 0 1em 0; }
figure { margin: 0; text-align: center; font-size: .85em; }
figure img, figure div.none {
  display: block; border: 1px solid #ccc;
  background-color: #fff;
  background-image: linear-gradient(45deg, #ccc 25%, transparent 25%), linear-gradient(-45deg, #ccc 25%, transparent 25%),
    linear-gradient(45deg, transparent 75%, #ccc 75%), linear-gradient(-45deg, transparent 75%, #ccc 75%);
  background-size: 16px 16px; background-position: 0 0, 0 8px, 8px -8px, -8px 0;
}
figure div.none { width: 120px; height: 80px; line-height: 80px; color: #666; background: #f4f4f4; }
"""


@dataclass(frozen=True)
class Thumb:
    name: str  # the image's name
    iou: float
    png: bytes | None  # the thumbnail, None when no cut-out was saved


@dataclass
class Strip:
    """The worst images of one artifact (one sha256), lowest IoU first."""

    title: str
    sha256: str
    data: str | None
    thumbs: list[Thumb] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # cut-outs that could not be shown, and why


def _cutout_path(record: BenchRecord, cutout: str) -> Path:
    return record.source.parent / cutout if record.source is not None else Path(cutout)


def thumbnail(path: Path, height: int = THUMB_HEIGHT) -> bytes:
    """An RGBA PNG of ``path`` at most ``height`` px high (and four times that wide)."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"{w}x{h} pixels, above the cap of {MAX_PIXELS}")
        rgba = img.convert("RGBA")
    scale = min(1.0, height / h, 4 * height / w)
    if scale < 1.0:
        rgba = rgba.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    buf = _stdio.BytesIO()
    rgba.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def worst_strips(rows: Sequence[Row], max_images: int = MAX_THUMBS, height: int = THUMB_HEIGHT) -> list[Strip]:
    """One strip per distinct artifact that has worst images, in table order."""
    from PIL import Image

    by_sha: dict[str, list[BenchRecord]] = {}
    for row in rows:
        by_sha.setdefault(row.record.sha256, []).append(row.record)
    strips = []
    for sha, records in by_sha.items():
        entries: dict[str, tuple[BenchRecord, WorstImage]] = {}  # image name -> (its record, its WorstImage)
        for r in records:
            for w in (r.accuracy.worst if r.accuracy else []):
                if w.name not in entries or (entries[w.name][1].cutout is None and w.cutout is not None):
                    entries[w.name] = (r, w)
        if not entries:
            continue
        first = records[0]
        names = ", ".join(dict.fromkeys(r.name for r in records))
        strip = Strip(f"{names} ({first.format} {first.precision})", sha,
                      first.accuracy.data if first.accuracy else None)
        for r, w in sorted(entries.values(), key=lambda e: e[1].iou)[:max_images]:
            png = None
            if w.cutout:
                path = _cutout_path(r, w.cutout)
                if not path.is_file():
                    strip.missing.append(f"{w.name}: cut-out not found at {path}")
                    continue
                try:
                    png = thumbnail(path, height)
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                    strip.missing.append(f"{w.name}: cut-out {path} is not a readable image ({e})")
                    continue
            strip.thumbs.append(Thumb(w.name, w.iou, png))
        strips.append(strip)
    return strips


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _png_src(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(report: Report, pareto_png: bytes | None, strips: Sequence[Strip]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{_e(report.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>{_e(report.title)}</h1>", '<ul class="summary">']
    out += [f"<li><b>{_e(label)}</b>: {_e(text)}</li>" for label, text in report.summary]
    out += ["</ul>", f'<p class="how">How to read: {_e(report.how_to_read)}</p>']

    out.append("<table>\n<thead><tr>" + "".join(
        f'<th class="num">{_e(c.header)}</th>' if c.numeric else f"<th>{_e(c.header)}</th>" for c in report.columns)
        + "</tr></thead>\n<tbody>")
    for row in report.rows:
        cls = "baseline" if row.is_baseline else ("other-machine" if not row.same_machine else "")
        cells = "".join(f'<td class="num">{_e(row.cells[c.key])}</td>' if c.numeric else f"<td>{_e(row.cells[c.key])}</td>"
                        for c in report.columns)
        out.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    out.append("</tbody>\n</table>")
    out.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in report.notes) + "</ul>")
    if report.footnotes:
        out.append('<ul class="footnotes">' + "".join(f"<li>{_e(m)} {_e(t)}</li>" for m, t in report.footnotes)
                   + "</ul>")

    out.append("<h2>Latency against IoU</h2>")
    if pareto_png is not None:
        out.append(f'<img class="plot" alt="Pareto plot: p50 latency against IoU" src="{_png_src(pareto_png)}">')
    else:
        out.append("<p class=\"caption\">No plot: matplotlib is not installed (pip install 'edgecut[plot]').</p>")

    out.append("<h2>Worst cut-outs</h2>")
    if not strips:
        out.append('<p class="caption">No record lists its worst images (bench with accuracy records them).</p>')
    for s in strips:
        data = f" on {s.data}" if s.data else ""
        out.append(f"<h3>{_e(s.title)}</h3>")
        out.append(f'<p class="caption">lowest IoU first{_e(data)}; sha256 {_e(s.sha256[:12])}</p>')
        out.append('<div class="strip">')
        for t in s.thumbs:
            pic = (f'<img alt="{_e(t.name)}" src="{_png_src(t.png)}">' if t.png is not None
                   else '<div class="none">no cut-out saved</div>')
            out.append(f"<figure>{pic}<figcaption>{_e(t.name)}<br>IoU {t.iou:.3f}</figcaption></figure>")
        out.append("</div>")
        if s.missing:
            out.append('<p class="missing">' + "<br>".join(f"skipped {_e(m)}" for m in s.missing) + "</p>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
