"""The search's result: the winner (checked on held-out images) and what is written about it.

``out/`` after a search:

- ``model/``: the chosen artifact (a copy of its step's output);
- ``recipe.yaml``: the recipe of its chain, which ``edgecut run recipe.yaml`` rebuilds;
- ``optimize.md``: one paragraph on why it won and what the runner-up costs, and the table of every
  candidate tried (measured, failed, dropped by the INT8 gate, not refined, not tried);
- ``optimize.json``: the same as data, with the machine's fingerprint and the settings;
- ``pareto.png``: cost against val IoU of everything measured, the budget line, the winner marked;
- ``steps/`` (the recipe runner's cache, and the split files its steps read), ``measure/`` (bench records), ``recipes/``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

from edgecut import io
from edgecut.search.state import Row, recipe_text


def holdout_iou(search, row: Row) -> float:
    """Val IoU of ``row``'s artifact on the held-out images, through this machine's Runner."""
    from edgecut import runtime
    from edgecut.data.folder import find_samples
    from edgecut.measure.accuracy import evaluate

    runner = runtime.load(row.artifact, threads=row.threads if search.measurer.where is None else None)
    if row.size:
        art = runner.spec
        runner = runtime.AtSize(runner, art.with_size((row.size, row.size)))
    samples = find_samples(search.data, str(search.splits.holdout))
    return float(evaluate(runner, samples, composites=False, progress=False).metrics["iou"])


def choose(search, reference: Row) -> Row | None:
    """The fastest candidate within the budget on the search images that stays within it on held-out ones."""
    budget = search.config.max_iou_drop
    reference.holdout_iou = holdout_iou(search, reference)
    within = sorted((r for r in search.rows.values() if r.label == "candidate" and r.status == "measured"
                     and r.iou >= search.floor), key=lambda r: r.cost)
    for row in within:
        row.holdout_iou = holdout_iou(search, row)
        if reference.holdout_iou - row.holdout_iou <= budget + 1e-12:
            search.say(f"winner: {row.name} (held-out IoU {row.holdout_iou:.4f}, the model's "
                       f"{reference.holdout_iou:.4f})")
            return row
        search.say(f"{row.name}: within the budget on the search images, not on the held-out ones "
                   f"({row.holdout_iou:.4f} against the model's {reference.holdout_iou:.4f}); the next one")
        row.reason = f"held-out IoU {row.holdout_iou:.4f}: outside the budget there"
    return None


def _count(rows: list[Row], **where) -> int:
    return sum(1 for r in rows if all(getattr(r, k) == v for k, v in where.items()))


def paragraph(search, result) -> str:
    ref, win, rows = result.reference, result.winner, [r for r in result.rows if r.label == "candidate"]
    reused = sum(r.reused for r in rows if r.status in ("measured", "failed"))
    tried = (f"{_count(rows, status='measured')} candidate(s) measured and {_count(rows, status='failed')} failed "
             f"({reused} of these reused from earlier runs), {_count(rows, status='dropped')} "
             f"dropped by the INT8 gate, {_count(rows, status='not refined')} base(s) not refined, "
             f"{_count(rows, status='not tried')} not tried within the budget.")
    if win is None:
        return (f"No candidate kept val IoU within {search.config.max_iou_drop:g} of the model's {ref.iou:.4f} on "
                f"both the search and the held-out images. {tried} Raise --max-iou-drop or --budget-minutes.")
    budget = search.config.max_iou_drop
    within = [r for r in rows if r.status == "measured" and r is not win and r.iou >= search.floor]
    lost = [r for r in within if r.holdout_iou is not None and ref.holdout_iou - r.holdout_iou > budget + 1e-12]
    rivals = sorted((r for r in within if r not in lost), key=lambda r: r.cost)
    anchor = next((r for r in rows if r.base == "model" and r.method == "fp32" and r.status == "measured"), None)
    text = (f"**{win.name}** won: the fastest candidate within the budget on {search.measurer.profile.name}, "
            f"{win.cost:.4g} {win.unit}")
    if anchor is not None and anchor is not win and anchor.cost > 0:
        text += f" ({anchor.cost / win.cost:.2f}x faster than the model's {anchor.format} FP32, {anchor.cost:.4g})"
    text += (f". Its val IoU is {win.iou:.4f} against the model's {ref.iou:.4f} ({win.iou - ref.iou:+.4f}; the "
             f"budget is -{search.config.max_iou_drop:g}), and {win.holdout_iou:.4f} against "
             f"{ref.holdout_iou:.4f} on the {search.splits.counts['holdout']} held-out images.")
    for r in sorted(lost, key=lambda r: r.cost):
        text += (f" {r.name} was faster ({r.cost:.4g} {r.unit}) and within the budget on the search images, but "
                 f"scored {r.holdout_iou:.4f} on the held-out ones.")
    if rivals:
        ru = rivals[0]
        text += (f" The runner-up, {ru.name}, costs {ru.cost:.4g} {ru.unit} ({ru.cost / win.cost - 1:+.0%}) at val "
                 f"IoU {ru.iou:.4f}.")
    return f"{text} {tried}"


def _fmt(v, spec: str = ".4f") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def table(rows: list[Row]) -> str:
    lines = ["| candidate | status | format | precision | method | size | val IoU | held-out IoU | cost | unit | MB "
             "| agreement | note |", "|---|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        note = r.reason + (" (reused)" if r.reused else "")
        lines.append(f"| {r.name} | {r.label if r.label != 'candidate' else r.status} | {r.format} | {r.precision} | "
                     f"{r.method} | {r.size or ''} | {_fmt(r.iou)} | {_fmt(r.holdout_iou)} | {_fmt(r.cost, '.4g')} | "
                     f"{r.unit} | {_fmt(r.size_mb, '.2f')} | {_fmt(r.agreement)} | {note} |")
    return "\n".join(lines)


def plot(search, result) -> bytes | None:
    """Cost against val IoU of every measured candidate, the budget line, the winner starred."""
    from edgecut._optional import available

    if not available("matplotlib"):
        return None
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in result.rows if r.label == "candidate" and r.status in ("measured", "dropped")]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in pts:
        marker = {"fp32": "o", "fp16": "s"}.get(r.precision, "^")
        ax.scatter(r.cost, r.iou, marker=marker, s=36, alpha=0.5 if r.status == "dropped" else 0.9)
        ax.annotate(r.name, (r.cost, r.iou), xytext=(4, 3), textcoords="offset points", fontsize=6)
    if result.winner is not None:
        ax.scatter(result.winner.cost, result.winner.iou, marker="*", s=220, color="gold", edgecolor="black", zorder=3)
    ax.axhline(search.floor, color="crimson", lw=1, ls="--", label=f"budget: IoU >= {search.floor:.4f}")
    ax.axhline(result.reference.iou, color="grey", lw=1, ls=":", label=f"the model: {result.reference.iou:.4f}")
    ax.set_xlabel(f"cost on {search.measurer.profile.name} ({pts[0].unit})")
    ax.set_ylabel("val IoU (search images)")
    ax.set_title(f"edgecut optimize: {search.model.name} for {search.measurer.profile.name}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_result(search, result) -> None:
    from edgecut.env import fingerprint

    out: Path = search.out
    result.paragraph = paragraph(search, result)
    if result.winner is not None:
        chosen = copy_artifact(Path(result.winner.artifact), out / "model", result.winner, search)
        header = (f"# Rebuilds {result.winner.name}, the artifact edgecut optimize chose for "
                  f"{search.measurer.profile.name}: edgecut run recipe.yaml --out DIR\n")
        if result.winner.size:
            header += (f"# It runs at {result.winner.size}x{result.winner.size} (the export takes any size; "
                       f"{chosen.name}/edgecut.json says {result.winner.size}): bench or remove it with --size\n")
        io.write_text(out / "recipe.yaml", recipe_text(search.candidates[result.winner.name], search.model,
                                                       search.data, header, source=search.source))
    rows = [result.reference, *(r for r in result.rows if r is not result.reference)]
    io.write_text(out / "optimize.md", f"# edgecut optimize: {search.model} for {search.measurer.profile.name}\n\n"
                  f"{result.paragraph}\n\n{table(rows)}\n")
    io.write_json(out / "optimize.json", {
        "model": str(search.model), "data": str(search.data), "target": search.config.target,
        "config": dataclasses.asdict(search.config), "floor": search.floor, "splits": search.splits.counts,
        "winner": result.winner.name if result.winner else None, "paragraph": result.paragraph,
        "rows": [dataclasses.asdict(r) for r in rows], "machine": fingerprint(search.config.target)})
    png = plot(search, result)
    if png is not None:
        io.write_bytes(out / "pareto.png", png)


def copy_artifact(src: Path, dest: Path, row: Row, search) -> Path:
    """``src`` copied to ``dest`` (replacing what was there): the chosen artifact, its spec at the size it won
    at, and the search's numbers in its metrics (``optimize``)."""
    from edgecut.artifact import MANIFEST

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    manifest = io.read_json(tmp / MANIFEST)
    if row.size:
        manifest["spec"]["input_size"] = [row.size, row.size]
    manifest.setdefault("metrics", {})["optimize"] = {
        "candidate": row.name, "target": search.config.target, "val_iou": row.iou, "holdout_iou": row.holdout_iou,
        "cost": row.cost, "unit": row.unit, "max_iou_drop": search.config.max_iou_drop}
    io.write_json(tmp / MANIFEST, manifest)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
