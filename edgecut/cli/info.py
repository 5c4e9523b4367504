"""``edgecut info``: an artifact's manifest, or the registered architectures."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgecut.cli.app import app, console, err
from edgecut.cli.options import ArtifactArg
from edgecut.errors import EdgecutError


@app.command()
def info(
    model: ArtifactArg = None,
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
