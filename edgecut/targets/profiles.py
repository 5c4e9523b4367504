"""Device profiles: what a device runs (formats, precisions, runtime providers, threads, input
size) and how it is reached, one YAML file each in ``export_targets/`` (or any path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgecut.artifact import first_error
from edgecut.errors import EdgecutError, InputError

PROFILE_DIR = Path(__file__).resolve().parents[2] / "export_targets"  # the repository's (an editable install)


class Profile(BaseModel):
    """One device: the formats and precisions it runs, in preference order, and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    arch: Literal["aarch64", "x86_64"]
    formats: tuple[Literal["onnx", "ort", "tflite", "openvino", "ncnn", "coreml", "executorch"], ...] = Field(min_length=1)
    precisions: tuple[Literal["fp32", "fp16", "int8"], ...] = Field(min_length=1)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # ONNX Runtime, first available wins
    threads: int | None = Field(default=None, ge=1)  # None: the runtime's default (all cores)
    input_size: tuple[int, int] | None = None  # the size the device runs at; None: the model's own
    reach: str = "local"  # local | arm64-emu | ssh://user@host[:port]
    trtexec: bool = False  # the device builds a TensorRT engine from the ONNX file (Jetson)
    notes: str = ""

    @field_validator("reach")
    @classmethod
    def _reach(cls, v: str) -> str:
        if v not in ("local", "arm64-emu") and not v.startswith("ssh://"):
            raise ValueError(f"reach {v!r}: use local, arm64-emu or ssh://user@host[:port]")
        return v


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) if PROFILE_DIR.is_dir() else []


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A profile by name (``export_targets/NAME.yaml``) or by path, checked; one clear error otherwise."""
    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            names = ", ".join(profile_names()) or "none found"
            raise EdgecutError(f"no device profile {str(name_or_path)!r} (profiles: {names}); or give a "
                               "profile's .yaml path")
    if not path.is_file():
        raise InputError(path, "device profile not found")
    from edgecut.parsing import yaml_document

    try:
        data = yaml_document(path.read_text(encoding="utf-8"))[0]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the profile ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}{where}", f"not valid YAML: {why}", "fix the profile's syntax") from None
    if not isinstance(data, dict):
        raise InputError(path, "a device profile is a mapping of keys (name, arch, formats, ...)")
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise InputError(path, f"not a valid device profile: {first_error(e)}",
                         "see export_targets/README.md for the keys") from None


def export_choice(profile: Profile, format: str | None = None, precision: str | None = None) -> tuple[str, str]:
    """The (format, precision) ``edgecut export --target`` makes for ``profile``: what was asked, if
    the device runs it, else the profile's first format and its first precision that format holds
    (the profile's preference order)."""
    for what, asked, allowed in (("format", format, profile.formats), ("precision", precision, profile.precisions)):
        if asked is not None and asked not in allowed:
            raise EdgecutError(f"--{what} {asked}: {profile.name} runs {', '.join(allowed)} (its profile's {what}s); "
                               f"drop --{what} to take {allowed[0]}, or export without --target")
    from edgecut.formats import FORMATS

    format = format or profile.formats[0]
    held = FORMATS[format].precisions if format in FORMATS else profile.precisions
    return format, precision or next((p for p in profile.precisions if p in held), profile.precisions[0])
