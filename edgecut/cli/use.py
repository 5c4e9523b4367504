"""Commands that inspect and use a model: ``info``, ``remove``, ``doctor``, ``quickstart``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgecut.cli.app import app, console, env_app, err
from edgecut.cli.options import RunDevice, RunThreads
from edgecut.errors import EdgecutError


@app.command()
def info(
    model: Annotated[Optional[Path], typer.Argument(help="Artifact directory.")] = None,
    json_flag: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    size: Annotated[Optional[int], typer.Option(help="Count MACs at this input side instead of the spec's.")] = None,
    list_archs: Annotated[bool, typer.Option("--list-archs", help="List registered architectures.")] = False,
) -> None:
    """Show an artifact's manifest: format, precision, spec, params, MACs, lineage, files."""
    from rich.markup import escape

    from edgecut.artifact import load_artifact

    if list_archs:
        from edgecut.models.registry import builder_options, list_models

        for name in list_models():
            console.print(f"{name}  {builder_options(name)}")
        return
    if model is None:
        raise EdgecutError("give MODEL (an artifact directory), or --list-archs")
    art = load_artifact(model, verify=False)  # the manifest is worth showing even when a file is damaged
    try:
        art.verify()
        files = f"{len(art.manifest.files)} file(s), sha256 checked"
    except EdgecutError as e:
        files = f"DAMAGED: {e}"
    m = art.manifest.model_dump(mode="json")
    if size is not None:
        if art.manifest.format != "torch":
            raise EdgecutError(f"--size recounts MACs of torch artifacts only; {model} is {art.manifest.format}")
        from edgecut.models.profile import count_macs
        from edgecut.models.store import load_model

        spec = art.spec.with_size(size)
        m["macs"] = count_macs(load_model(load_artifact(art.path)).module, spec.input_size)
        m["macs_input_size"] = list(spec.input_size)
    else:
        m["macs_input_size"] = list(art.spec.input_size)
    if json_flag:
        print(json.dumps(m, indent=2, sort_keys=True))
        if files.startswith("DAMAGED"):
            err.print(f"[yellow]note[/yellow] {escape(files)}", highlight=False)
        return
    table = Table(title=str(model), show_header=False)
    for key in ("format", "precision", "model_file", "params", "macs", "macs_input_size"):
        val = m.get(key)
        if key == "macs" and val is not None:
            val = f"{val / 1e9:.3f} G"
        elif key == "params" and val is not None:
            val = f"{val:,}"
        table.add_row(key, str(val))
    table.add_row("arch", json.dumps(m["arch"]))
    sources = (m["metrics"].get("import") or {}).get("spec_source")
    if isinstance(sources, dict):  # an imported model: each field, and whether it was given or measured
        for key, value in m["spec"].items():
            table.add_row(f"spec {key}", f"{json.dumps(value)}  ({sources.get(key, 'fixed')})")
    else:
        table.add_row("spec", json.dumps(m["spec"]))
    for step in m["lineage"]:
        table.add_row("lineage", f"{step['step']} at {step['time']}")
    val = m["metrics"].get("val")
    for k, v in val.items() if isinstance(val, dict) else ():
        table.add_row(f"val {k}", f"{v:.4f}" if isinstance(v, (int, float)) else str(v))
    table.add_row("files", files)
    console.print(table)


@app.command()
def remove(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    out: Annotated[Path, typer.Option(help="Output folder (one cut-out per input).")],
    format: Annotated[str, typer.Option(help="rgba | mask | composite")] = "rgba",
    bg: Annotated[str, typer.Option(help="Background for --format composite: name, #RRGGBB or R,G,B.")] = "white",
    encoding: Annotated[str, typer.Option(help="png (lossless) | webp | jpg (composite and mask only).")] = "png",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Cut out again images whose output exists "
                                                                "(default: skip them; a stopped run resumes).")] = False,
    threads: RunThreads = None,
    workers: Annotated[Optional[int], typer.Option(help="Threads for decoding, resizing and encoding, beside the "
                                                        "model's --threads (default: the cores split between the "
                                                        "two; 0: one image at a time).")] = None,
    batch: Annotated[str, typer.Option(help="Images per inference call, or auto (several where the model "
                                            "takes a batch).")] = "1",
    device: RunDevice = "cpu",
    alpha: Annotated[str, typer.Option(help="probability | minmax (each map stretched to 0..1 first, as rembg does: "
                                            "the same model gives rembg's cut-outs).")] = "probability",
) -> None:
    """Cut out backgrounds: files or folders in, cut-outs at the original size out, decoding,
    inference and encoding overlapping; failures are listed at the end and the rest go on."""
    from rich.markup import escape

    from edgecut.cutout import expand_inputs, load_for_cutouts, parse_color, remove_background

    if format not in ("rgba", "mask", "composite"):
        raise EdgecutError(f"--format {format!r}: use rgba, mask or composite")
    color = parse_color(bg)
    files = expand_inputs(inputs)
    # the cores split between the model and the image work, or all to a model that is the bottleneck
    runner, image_threads = load_for_cutouts(model, device=device, threads=threads, workers=workers,
                                             probe=files[0] if len(files) > 8 else None)
    report = remove_background(files, runner, out, fmt=format, bg=color, encoding=encoding,  # type: ignore[arg-type]
                               overwrite=overwrite, workers=image_threads, batch=batch, alpha=alpha)  # type: ignore[arg-type]
    line = f"wrote {len(report.written)} cut-out(s) to {out}"
    if report.written and report.seconds > 0:
        line += f" ({report.images_per_s:.1f} images/s)"
    if report.skipped:
        line += f"; {len(report.skipped)} already there, skipped (--overwrite redoes them)"
    if report.failed:
        line += f"; {len(report.failed)} input(s) failed:"
    console.print(escape(line), highlight=False)
    for _, msg in report.failed:  # at the end, after every other image was cut out
        err.print(f"[red]error[/red] {escape(msg)}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def doctor(json_flag: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False) -> None:
    """What this machine offers: backends, devices, CPU flags, threads."""
    from edgecut.env import environment, isa_notes

    env = environment(probe_backends=True)
    env["isa_notes"] = isa_notes(set(env["cpu"]["flags"]))
    if json_flag:
        print(json.dumps(env, indent=2, sort_keys=True))
        return
    cpu = env["cpu"]
    console.print(f"python {env['python']} on {env['platform']}")
    console.print(f"cpu    {cpu['model']} ({cpu['arch']}, {cpu['cores']} logical cores)")
    console.print(f"flags  {' '.join(cpu['flags']) or '-'}")
    for note in isa_notes(set(cpu["flags"])):
        console.print(f"       {note}", highlight=False)
    console.print(f"torch  {env['devices']['torch']}")
    table = Table("backend", "version", "devices / providers")
    from edgecut.env import PACKAGES

    for name in PACKAGES:
        ver = env["backends"].get(name)
        dev = env["devices"].get(name, "")
        table.add_row(name, ver or "[dim]not installed[/dim]", str(dev) if ver else "")
    console.print(table)
    import edgecut.converters.envs as envs

    for name, state in envs.status().items():
        console.print(f"env    {name}: {state} ({envs.ENVS[name].purpose})", highlight=False)


@env_app.command("setup")
def env_setup(name: Annotated[str, typer.Argument(help="litert: litert-torch and ai-edge-quantizer, for "
                                                      "--format tflite.")]) -> None:
    """Build a converter environment once (idempotent; under the edgecut cache; it shares edgecut's torch)."""
    import edgecut.converters.envs as envs

    envs.setup(name, say=lambda text: console.print(text, highlight=False))


@env_app.command("list")
def env_list() -> None:
    """The converter environments: ready, or how to build them."""
    import edgecut.converters.envs as envs

    for name, state in envs.status().items():
        console.print(f"{name}: {state} ({envs.ENVS[name].purpose})", highlight=False)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/quickstart"),
) -> None:
    """The main job on synthetic data: recipes/quickstart.yaml (teacher, pruned, student, exports, bench, compare)."""
    from edgecut.cli.recipes import run_cmd

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
    if not recipe.is_file():
        raise EdgecutError("the quickstart recipe is recipes/quickstart.yaml of edgecut's source checkout, which this "
                           "installation does not have: run 'edgecut run path/to/recipes/quickstart.yaml'")
    run_cmd(recipe, out=out, from_step=None, only=None, dry_run=False, set_=None)
