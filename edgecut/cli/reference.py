"""The command reference (``docs/cli.md``), written from the commands themselves.

``python -m edgecut.cli.reference > docs/cli.md`` regenerates it; a test fails when the file
and the commands disagree, so the reference never drifts from ``--help``.
"""

from __future__ import annotations

import inspect
from typing import Any

HEADER = """# edgecut command reference

Every command and option, as `edgecut COMMAND --help` prints them (this file is generated:
`python -m edgecut.cli.reference > docs/cli.md`). MODEL is an artifact folder (a model file plus
`edgecut.json`); DIR a folder. How the stages work is in [guide.md](guide.md), how
measurements are taken in [measuring.md](measuring.md).
"""


def _commands() -> list[tuple[str, Any]]:
    """(full name, command) in the order ``edgecut --help`` lists them; groups expanded."""
    import typer

    from edgecut.cli.main import app

    out = []
    for name, cmd in typer.main.get_command(app).commands.items():
        subs = getattr(cmd, "commands", None)
        out.extend((f"{name} {sub}", c) for sub, c in subs.items()) if subs else out.append((name, cmd))
    return out


def _value(param: Any) -> str:
    annotation = getattr(param.type_descriptor, "annotation", None)
    name = getattr(annotation, "__name__", "")
    return {"Path": "PATH", "int": "INT", "float": "NUMBER", "str": "TEXT"}.get(name, "VALUE")


def _option(param: Any) -> str:
    flags = " / ".join(param.opts + param.secondary_opts)
    if param.is_flag:
        return f"`{flags}`"
    return f"`{flags} {_value(param)}`" + (" (repeatable)" if param.multiple else "")


def _default(param: Any) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False) or param.default in (None, [], ()):
        return ""
    return f"`{param.default}`"


def _usage(name: str, cmd: Any) -> str:
    parts = [f"edgecut {name}"]
    for p in cmd.params:
        if not hasattr(p, "is_flag"):  # an argument
            parts.append(p.name.upper() + ("..." if p.nargs == -1 or p.multiple else ""))
        elif p.required:
            parts.append(f"{p.opts[0]} {_value(p)}")
    return " ".join(parts) + " [OPTIONS]"


def render() -> str:
    lines = [HEADER]
    for name, cmd in _commands():
        lines += [f"## edgecut {name}", "", inspect.cleandoc(cmd.help or ""), "", "```", _usage(name, cmd), "```", ""]
        options = [p for p in cmd.params if hasattr(p, "is_flag")]
        arguments = [p for p in cmd.params if not hasattr(p, "is_flag")]
        if arguments or options:
            lines += ["| option | default | what it does |", "| --- | --- | --- |"]
            lines += [f"| `{p.name.upper()}` | {_default(p)} | {p.help or ''} |" for p in arguments]
            lines += [f"| {_option(p)} | {_default(p)} | {(p.help or '').replace('|', '&#124;')} |" for p in options]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()


__all__ = ["render"]
