"""ModelSpec pre/post-processing and artifact directories (edgecut.artifact)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from edgecut import io
from edgecut.artifact import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MANIFEST,
    Manifest,
    ModelSpec,
    Step,
    is_artifact,
    load_artifact,
    write_artifact,
)
from edgecut.errors import InputError

# --------------------------------------------------------------------------- ModelSpec


def test_preprocess_shape_dtype_and_normalisation():
    spec = ModelSpec(input_size=(32, 48), size_divisor=16)
    white = np.full((20, 30, 3), 255, np.uint8)
    batch = spec.preprocess(white)
    assert batch.shape == (1, 3, 32, 48)
    assert batch.dtype == np.float32
    for c in range(3):
        expected = (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(batch[0, c], expected, rtol=1e-5)
    black = spec.preprocess(np.zeros((50, 70, 3), np.uint8))  # larger than the input: INTER_AREA path
    for c in range(3):
        np.testing.assert_allclose(black[0, c], -IMAGENET_MEAN[c] / IMAGENET_STD[c], rtol=1e-5)


def test_preprocess_channel_order_is_rgb():
    spec = ModelSpec(input_size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255
    x = spec.preprocess(img)[0]
    np.testing.assert_allclose(x[0], 1.0)
    np.testing.assert_allclose(x[1:], 0.0)


def test_preprocess_batch_of_different_sizes():
    spec = ModelSpec(input_size=(16, 16))
    imgs = [np.full((10, 12, 3), 255, np.uint8), np.zeros((40, 33, 3), np.uint8)]
    batch = spec.preprocess(imgs)
    assert batch.shape == (2, 3, 16, 16)
    assert batch[0].mean() > batch[1].mean()


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32)], ids=["gray", "rgba", "float"])
def test_preprocess_rejects_wrong_input(bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        ModelSpec(input_size=(8, 8)).preprocess([bad])


def test_to_probability_of_logits():
    spec = ModelSpec()
    logits = np.array([[[[0.0, 50.0], [-50.0, 1e4]], ]], np.float32).reshape(1, 1, 2, 2)
    logits[0, 0, 1, 0] = -1e4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            p = spec.to_probability(logits)
    assert p.shape == (1, 2, 2) and p.dtype == np.float32
    assert p[0, 0, 0] == pytest.approx(0.5)
    assert p[0, 0, 1] == pytest.approx(1.0)
    assert p[0, 1, 0] == pytest.approx(0.0, abs=1e-7)
    assert p[0, 1, 1] == pytest.approx(1.0)
    assert np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0
    np.testing.assert_allclose(spec.to_probability(np.array([[2.0]])), 1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_to_probability_of_probabilities_is_clipped_passthrough():
    spec = ModelSpec(output="probability")
    out = np.array([-0.1, 0.25, 1.3], np.float32).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(spec.to_probability(out)[0, 0], [0.0, 0.25, 1.0])


def test_to_probability_rejects_several_channels():
    with pytest.raises(ValueError, match="one output channel"):
        ModelSpec().to_probability(np.zeros((1, 2, 4, 4), np.float32))


def test_with_size_rounds_up_to_divisor():
    spec = ModelSpec(size_divisor=16)
    assert spec.with_size(50).input_size == (64, 64)
    assert spec.with_size(64).input_size == (64, 64)
    assert spec.with_size((33, 17)).input_size == (48, 32)
    assert spec.with_size(1).input_size == (16, 16)
    assert ModelSpec(size_divisor=4).with_size(37).input_size == (40, 40)
    assert spec.input_size == (320, 320)  # frozen: the original is unchanged
    assert spec.with_size(50).size_divisor == 16


def test_resize_back():
    prob = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = ModelSpec.resize_back(prob, (37, 50))
    assert out.shape == (37, 50) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out[0].mean() < out[-1].mean()  # rows stay rows (H and W not swapped)
    assert ModelSpec.resize_back(prob, (32, 32)) is prob


def test_spec_validation():
    with pytest.raises(ValidationError):
        ModelSpec(input_size=(0, 16))
    with pytest.raises(ValidationError):
        ModelSpec(colour="BGR")  # extra fields are refused
    with pytest.raises(ValidationError):
        ModelSpec(channel_order="BGR")
    spec = ModelSpec()
    with pytest.raises(ValidationError):
        spec.threshold = 0.3  # frozen


# --------------------------------------------------------------------------- artifacts


def _manifest(**kw) -> Manifest:
    base = dict(format="torch", model_file="model.bin", arch={"name": "unet", "kwargs": {"width": 4}},
                spec=ModelSpec(input_size=(32, 32), size_divisor=4), params=123, macs=4567,
                lineage=[Step(step="train", params={"epochs": 2})], metrics={"val": {"iou": 0.5}})
    base.update(kw)
    return Manifest(**base)


def _make(tmp_path, name="art", **kw):
    return write_artifact(tmp_path / name, _manifest(**kw), {"model.bin": b"weights" * 100, "extra.txt": b"hi"})


def test_write_and_load_artifact_roundtrip(tmp_path):
    art = _make(tmp_path)
    assert is_artifact(art.path)
    files = sorted(p.name for p in art.path.iterdir())
    assert files == ["edgecut.json", "extra.txt", "model.bin"]  # no temp files left behind
    loaded = load_artifact(art.path, verify=True)
    assert loaded.manifest == art.manifest
    m = loaded.manifest
    assert m.files["model.bin"].size == 700
    assert m.files["model.bin"].sha256 == io.sha256_file(art.path / "model.bin")
    assert "python" in m.tools
    assert m.spec == ModelSpec(input_size=(32, 32), size_divisor=4)
    assert m.lineage[0].step == "train" and m.lineage[0].params == {"epochs": 2}
    assert loaded.model_path == art.path / "model.bin"
    assert loaded.spec.input_size == (32, 32)


def test_an_artifacts_sha256_covers_every_file(tmp_path):
    """A one-file model is its file's sha256; a graph file beside its weights (ncnn, OpenVINO) is not
    the model: an FP16 or INT8 export can share the FP32 one's graph file, and must not share its identity."""
    one = write_artifact(tmp_path / "one", _manifest(), {"model.bin": b"weights" * 100})
    assert one.sha256 == io.sha256_file(one.path / "model.bin")
    a = _make(tmp_path, "a")
    b = write_artifact(tmp_path / "b", _manifest(), {"model.bin": b"weights" * 100, "extra.txt": b"ho"})
    assert a.manifest.files["model.bin"] == b.manifest.files["model.bin"] and a.sha256 != b.sha256
    assert a.sha256 == load_artifact(a.path).sha256 != a.manifest.files["model.bin"].sha256


def test_write_artifact_moves_a_finished_file(tmp_path):
    staged = tmp_path / "staged.bin"
    staged.write_bytes(b"abc")
    art = write_artifact(tmp_path / "a", _manifest(), {"model.bin": staged})
    assert not staged.exists()
    assert (art.path / "model.bin").read_bytes() == b"abc"
    load_artifact(art.path, verify=True)


def test_manifest_json_is_stable(tmp_path):
    art = _make(tmp_path)
    raw = json.loads((art.path / MANIFEST).read_text())
    assert list(raw) == sorted(raw)
    assert raw["schema_version"] == 1


def test_verify_catches_modified_file(tmp_path):
    art = _make(tmp_path)
    p = art.path / "model.bin"
    data = bytearray(p.read_bytes())
    data[10] ^= 1  # same size, other content
    p.write_bytes(bytes(data))
    loaded = load_artifact(art.path, verify=False)  # asked not to verify: loads
    with pytest.raises(InputError) as e:
        loaded.verify()
    assert str(p) in str(e.value)
    with pytest.raises(InputError, match="re-export or restore"):
        load_artifact(art.path)  # verified by default


def test_verify_catches_missing_listed_file(tmp_path):
    art = _make(tmp_path)
    (art.path / "extra.txt").unlink()
    with pytest.raises(InputError, match="missing") as e:
        load_artifact(art.path, verify=True)
    assert "extra.txt" in str(e.value)


def test_load_artifact_missing_path(tmp_path):
    p = tmp_path / "nothing"
    with pytest.raises(InputError) as e:
        load_artifact(p)
    assert str(p) in str(e.value)


def test_load_artifact_without_manifest(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="edgecut.json") as e:
        load_artifact(tmp_path)
    assert e.value.path == str(tmp_path)


def test_load_artifact_invalid_json(tmp_path):
    art = _make(tmp_path)
    (art.path / MANIFEST).write_text("{ this is not json")
    with pytest.raises(InputError, match="JSON") as e:
        load_artifact(art.path)
    assert e.value.path == str(art.path / MANIFEST)


@pytest.mark.parametrize("field,value", [("params", "many"), ("spec", {"input_size": "big"}),
                                         ("format", 3), ("unknown_field", 1)])
def test_load_artifact_wrong_field_type(tmp_path, field, value):
    art = _make(tmp_path)
    raw = json.loads((art.path / MANIFEST).read_text())
    raw[field] = value
    (art.path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(InputError) as e:
        load_artifact(art.path)
    assert e.value.path == str(art.path / MANIFEST)
    assert field in str(e.value) and "invalid manifest" in str(e.value)


def test_load_artifact_newer_schema(tmp_path):
    art = _make(tmp_path)
    raw = json.loads((art.path / MANIFEST).read_text())
    raw["schema_version"] = 99
    (art.path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(InputError, match="newer"):
        load_artifact(art.path)


def test_load_artifact_missing_model_file(tmp_path):
    art = _make(tmp_path)
    (art.path / "model.bin").unlink()
    with pytest.raises(InputError, match="missing") as e:
        load_artifact(art.path)
    assert e.value.path == str(art.path / "model.bin")


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_load_artifact_refuses_model_file_outside_folder(tmp_path, where):
    art = _make(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not part of the artifact")
    raw = json.loads((art.path / MANIFEST).read_text())
    raw["model_file"] = "../outside.bin" if where == "parent" else str(outside)
    (art.path / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(InputError) as e:
        load_artifact(art.path)
    assert "outside.bin" in str(e.value)


def test_tiny_artifact_fixture_is_complete(tiny_artifact):
    art = load_artifact(tiny_artifact.path, verify=True)
    m = art.manifest
    assert m.format == "torch" and m.model_file == "model.safetensors"
    assert m.arch == {"name": "unet", "kwargs": {"width": 4, "depth": 2}}
    assert m.spec.input_size == (32, 32) and m.spec.size_divisor == 4
    assert m.params and m.params > 0 and m.macs and m.macs > 0
    assert set(m.files) == {"model.safetensors"}
