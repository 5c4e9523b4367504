"""Parsing a user's text files defensively: YAML, JSON and a safetensors header, within limits.

YAML goes through a loader that refuses aliases (``*name``: a nine-deep alias bomb expands to
billions of nodes, a self-referencing one never ends) and duplicate keys (YAML keeps the last
silently), with the line of the offence. JSON is refused above a size and a nesting depth, so no
decoder recursion or memory bomb reaches Python. A safetensors header is read as tensor shapes,
checked against the file's length, without reading the tensors.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from edgecut.errors import InputError

MAX_JSON_BYTES = 64 << 20  # a manifest, a records file line or a state file is far smaller
MAX_DEPTH = 64  # nesting of JSON arrays / objects and YAML collections; edgecut writes fewer than 10
MAX_YAML_BYTES = 1 << 20  # a recipe or a device profile
MAX_HEADER_BYTES = 100 << 20  # safetensors refuses headers above this too
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def depth(obj: Any) -> int:
    """How deeply lists and dicts nest in ``obj`` (0 for a scalar), counted without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        value, level = todo.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        todo.extend((c, level + 1) for c in children)
    return deepest


def loads_json(text: str | bytes, path: str | os.PathLike | None, *, max_depth: int = MAX_DEPTH,
               max_bytes: int = MAX_JSON_BYTES, fix: str = "restore it or re-create it") -> Any:
    """``json.loads`` refusing text above ``max_bytes`` or nested deeper than ``max_depth``: one
    :class:`InputError` naming ``path`` for any text that is not such JSON."""
    if len(text) > max_bytes:
        raise InputError(path, f"{len(text)} bytes of JSON, above the limit of {max_bytes}", fix)
    try:
        obj = json.loads(text)
    except RecursionError:
        raise InputError(path, f"not valid JSON (nested deeper than {max_depth} levels)", fix) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})", fix) from None
    if depth(obj) > max_depth:
        raise InputError(path, f"not valid JSON for edgecut (nested deeper than {max_depth} levels)", fix)
    return obj


# --------------------------------------------------------------------------- YAML


def _strict_loader():
    """A SafeLoader class that refuses aliases, duplicate keys and deep nesting while composing."""
    import yaml
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    def refused(kind, problem: str, mark, fix: str):
        e = kind(None, None, problem, mark)
        e.fix = fix  # what to do instead: the caller's generic advice on YAML syntax does not apply
        return e

    class StrictLoader(yaml.SafeLoader):
        level = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise refused(ComposerError, f"the alias *{event.anchor} is refused (aliases can expand without "
                              "bound)", event.start_mark, "write the value out in full")
            self.level += 1
            try:
                if self.level > MAX_DEPTH:
                    raise refused(ComposerError, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark,
                                  "flatten the document")
                return super().compose_node(parent, index)
            finally:
                self.level -= 1

        def compose_mapping_node(self, anchor):
            node = super().compose_mapping_node(anchor)
            seen: dict[Any, Any] = {}
            for key, _ in node.value:
                k = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else None
                if k is not None and k in seen:
                    raise refused(ConstructorError, f"the key {key.value!r} is given twice (first on line "
                                  f"{seen[k].line + 1}), and YAML would keep only the last", key.start_mark,
                                  "keep one of them")
                if k is not None:
                    seen[k] = key.start_mark
            return node

    return StrictLoader


_LOADER: list[type] = []


def yaml_document(text: str) -> tuple[Any, Any]:
    """(data, root node) of one YAML document read by the strict loader; a problem is a
    ``yaml.YAMLError`` whose ``problem_mark`` holds the line (aliases, duplicate keys, depth, size)."""
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"{len(text)} characters, above the limit of {MAX_YAML_BYTES}")
    if not _LOADER:
        _LOADER.append(_strict_loader())
    loader = _LOADER[0](text)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


def yaml_text(doc: Any, **options: Any) -> str:
    """``doc`` as YAML the strict loader reads back: an object that appears twice is written out twice
    (``yaml.safe_dump`` would write an anchor and an alias, which the loader refuses)."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(doc, Dumper=NoAliases, **options)


def yaml_value(text: str) -> Any:
    """One value written as YAML (a ``--set`` value), read by the strict loader."""
    return yaml_document(text)[0]


# --------------------------------------------------------------------------- safetensors


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header alone; the header is checked
    against the file (offsets inside it, each tensor's bytes matching its shape and dtype)."""
    fix = "restore the weights file or re-create the artifact"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise InputError(path, "not a safetensors file (shorter than its header length)", fix)
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise InputError(path, f"not a safetensors file (a header of {n} bytes in a file of {size})", fix)
        header = loads_json(f.read(n), path, max_depth=4, fix=fix)
    if not isinstance(header, dict):
        raise InputError(path, "not a safetensors file (its header is no JSON object)", fix)
    shapes, data = {}, size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            width = DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"not a safetensors file (tensor {name!r} has no valid dtype, shape and "
                             "offsets)", fix) from None
        count = 1
        for d in shape:
            count *= d
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data or end - begin != count * width:
            raise InputError(path, f"not a safetensors file (tensor {name!r}: shape {shape} does not fit "
                             f"bytes {begin}..{end} of {data})", fix)
        shapes[name] = shape
    return shapes
