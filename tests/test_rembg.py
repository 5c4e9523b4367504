"""A way back into rembg: the ONNX file `export --rembg` writes is run by rembg itself as a custom
model, and its cut-outs are edgecut's `remove --alpha minmax` ones."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from edgecut import io
from edgecut.exporters import ExportConfig, export
from edgecut.exporters.config import OnnxOptions, ParityConfig

pytestmark = pytest.mark.slow

REMBG = """
import sys, numpy as np
from PIL import Image
from rembg import new_session, remove
session = new_session("u2net_custom", model_path=sys.argv[1])
for src, dest in zip(sys.argv[2::2], sys.argv[3::2]):
    mask = remove(Image.open(src), session=session, only_mask=True)
    np.save(dest, np.asarray(mask))
"""


@pytest.fixture(scope="module")
def rembg_export(trained, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rembg") / "student-rembg"
    config = ExportConfig(format="onnx", onnx=OnnxOptions(rembg=True), parity=ParityConfig(data=synth_data, count=4))
    return export(trained, out, config, progress=False)


def test_the_export_is_the_file_rembg_expects(rembg_export):
    import onnx

    spec = rembg_export.spec
    assert tuple(spec.input_size) == (320, 320) and not spec.dynamic_size and spec.output == "probability"
    model = onnx.load(str(rembg_export.model_path))
    assert model.graph.node[-1].op_type == "Sigmoid"  # the first output is the probability, as U^2-Net's d0
    assert rembg_export.manifest.metrics["parity"]["passed"]


def test_rembg_runs_it_and_cuts_out_what_edgecut_cuts_out(rembg_export, synth_data, tmp_path):
    rembg = pytest.importorskip("rembg", reason="rembg is a test-only dependency (pip install -e '.[dev]')")
    del rembg
    from edgecut import runtime
    from edgecut.cutout import RemoveConfig, remove_background

    images = sorted((synth_data / "images").iterdir())[:4]
    args = []
    for img in images:
        args += [str(img), str(tmp_path / f"{img.stem}.npy")]
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}  # rembg imports pymatting's numba code; the cut-out needs none
    p = subprocess.run([sys.executable, "-c", REMBG, str(rembg_export.model_path), *args], capture_output=True,
                       text=True, env=env, timeout=280)
    assert p.returncode == 0, p.stderr[-2000:]
    runner = runtime.load(rembg_export, threads=1)
    remove_background(images, runner, tmp_path / "edgecut", RemoveConfig(format="mask", alpha="minmax", workers=0),
                      progress=False)
    for img in images:
        theirs = np.load(tmp_path / f"{img.stem}.npy").astype(np.float32) / 255
        ours = io.read_mask(tmp_path / "edgecut" / f"{img.stem}.png").astype(np.float32) / 255
        assert theirs.shape == ours.shape
        # rembg resizes with PIL's Lanczos and divides by the brightest pixel; edgecut by 255 with OpenCV
        agreement = ((theirs > 0.5) == (ours > 0.5)).mean()
        assert agreement > 0.97 and np.abs(theirs - ours).mean() < 0.05, (img.name, agreement)


def test_rembg_needs_its_normalisation_and_the_torch_model(trained, tmp_path):
    from edgecut.errors import EdgecutError

    config = ExportConfig(format="onnx", onnx=OnnxOptions(rembg=True))
    onnx_art = export(trained, tmp_path / "onnx", ExportConfig(format="onnx"), progress=False)
    with pytest.raises(EdgecutError, match="torch artifact"):
        export(onnx_art, tmp_path / "r1", config, progress=False)
    with pytest.raises(EdgecutError, match="--dynamic"):
        export(trained, tmp_path / "r2", ExportConfig(format="onnx", dynamic=True, onnx=OnnxOptions(rembg=True)),
               progress=False)
    with pytest.raises(EdgecutError, match="not an option of format"):
        export(trained, tmp_path / "r3", ExportConfig(format="openvino", onnx=OnnxOptions(rembg=True)),
               progress=False)
