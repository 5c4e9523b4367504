"""A user's YAML, JSON and safetensors header, read within limits (edgecut/parsing.py)."""

from __future__ import annotations

import json
import struct

import pytest
import yaml

from edgecut import parsing
from edgecut.errors import InputError


def test_yaml_reads_plain_documents_with_their_nodes():
    data, root = parsing.yaml_document("a: 1\nb: [x, {c: 2}]\n")
    assert data == {"a": 1, "b": ["x", {"c": 2}]} and root.start_mark.line == 0
    assert parsing.yaml_document("")[0] is None and parsing.yaml_value("[1, 2]") == [1, 2]


@pytest.mark.parametrize("text, line, match", [
    ("a: &x [1]\nb: *x\n", 2, r"alias \*x is refused"),
    ("a: &x\n  b: *x\n", 2, r"alias \*x is refused"),
    ("a: 1\nb: 2\na: 3\n", 3, r"key 'a' is given twice \(first on line 1\)"),
    ("s:\n  x: {k: 1, k: 2}\n", 2, "key 'k' is given twice"),
    ("a: " + "[" * 70 + "]" * 70 + "\n", 1, "nested deeper than 64 levels"),
])
def test_yaml_refuses_aliases_duplicate_keys_and_depth_with_the_line(text, line, match):
    with pytest.raises(yaml.YAMLError, match=match) as e:
        parsing.yaml_document(text)
    assert e.value.problem_mark.line + 1 == line and e.value.fix


def test_yaml_keys_that_only_look_alike_are_two_keys_and_size_is_capped():
    assert parsing.yaml_document("1: a\n'1': b\n")[0] == {1: "a", "1": "b"}
    with pytest.raises(yaml.YAMLError, match="above the limit"):
        parsing.yaml_document("#" * (parsing.MAX_YAML_BYTES + 1))


def test_json_refuses_depth_and_size_and_names_the_file():
    assert parsing.loads_json('{"a": [1, {"b": null}]}', "f.json") == {"a": [1, {"b": None}]}
    for text in ("[" * 100_000 + "]" * 100_000, "[" * 65 + "]" * 65):
        with pytest.raises(InputError, match=r"f\.json: not valid JSON.*nested deeper than 64 levels"):
            parsing.loads_json(text, "f.json")
    with pytest.raises(InputError, match="above the limit of 10"):
        parsing.loads_json("[1, 2, 3, 4, 5]", "f.json", max_bytes=10)
    with pytest.raises(InputError, match="not valid JSON"):
        parsing.loads_json("{", "f.json")
    assert parsing.depth([[[]], {"a": {"b": 1}}]) == 3 and parsing.depth(5) == 0


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_safetensors_shapes_come_from_the_header_checked_against_the_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 3, 3, 3), "b": torch.zeros(4, dtype=torch.float16)}, str(tmp_path / "m.safetensors"))
    assert parsing.safetensors_shapes(tmp_path / "m.safetensors") == {"w": (4, 3, 3, 3), "b": (4,)}
    bad = {
        "short": b"\x01\x00",
        "huge-header": struct.pack("<Q", 2**40) + b"{}",
        "not-json": struct.pack("<Q", 3) + b"abc",
        "lying-shape": _safetensors({"w": {"dtype": "F32", "shape": [10**9, 3], "data_offsets": [0, 16]}}, bytes(16)),
        "past-the-end": _safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
        "no-dtype": _safetensors({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, bytes(1)),
        "negative": _safetensors({"w": {"dtype": "U8", "shape": [-1, -1], "data_offsets": [0, 1]}}, bytes(1)),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match="not (a safetensors file|valid JSON)"):
            parsing.safetensors_shapes(tmp_path / name)


def test_yaml_text_writes_a_shared_object_twice_so_the_strict_loader_reads_it_back():
    shared = {"width": 4, "depth": 2}
    doc = {"steps": {"a": {"arch_kwargs": shared}, "b": {"arch_kwargs": shared}}}
    assert "&" in yaml.safe_dump(doc)  # what a plain dump writes: an anchor and an alias
    text = parsing.yaml_text(doc, sort_keys=False)
    assert "&" not in text and "*" not in text and parsing.yaml_document(text)[0] == doc
