"""``edgecut doctor``: what this machine offers (backends, devices, CPU flags, threads)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from edgecut.cli.app import app, console


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
