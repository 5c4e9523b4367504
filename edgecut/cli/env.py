"""``edgecut env setup | list``: converter environments for converters that cannot live beside edgecut."""

from __future__ import annotations

from typing import Annotated

import typer

from edgecut.cli.app import app, console

env_app = typer.Typer(no_args_is_help=True, help="Converter environments for converters that cannot live beside "
                                                 "edgecut's packages (LiteRT).")
app.add_typer(env_app, name="env")


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
