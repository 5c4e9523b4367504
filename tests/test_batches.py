"""A model exported for one batch size takes any batch: split into calls it accepts, padded, joined."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecut.artifact import ModelSpec
from edgecut.batches import in_batches_of


def test_any_batch_is_split_padded_and_joined():
    seen = []

    def run(x):
        assert x.shape[0] == 3
        seen.append(x.shape[0])
        return x * 2

    x = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    np.testing.assert_array_equal(in_batches_of(run, x, 3), x * 2)
    assert seen == [3, 3, 3]  # the last call padded with the last image, its extra outputs dropped
    t = torch.arange(5.0).view(5, 1)
    out = in_batches_of(lambda b: (b + 1, b), t, 2, cat=torch.cat)  # several outputs, as the teacher's file has
    assert torch.equal(out[0], t + 1) and torch.equal(out[1], t)
    assert in_batches_of(lambda b: b.shape[0], x, None) == 7  # any batch: one call


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module")
def batch1_onnx(tmp_path_factory):
    """A model exported the way most people do: torch.onnx.export, no dynamic axes (batch 1, 32 x 32)."""
    path = tmp_path_factory.mktemp("b1") / "model.onnx"
    torch.onnx.export(_Net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, input_names=["input"])
    return path


def test_onnxruntime_runs_a_batch_1_model_on_any_batch(batch1_onnx):
    from edgecut.runtime.onnxruntime_runner import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(batch1_onnx, ModelSpec(input_size=(32, 32), dynamic_size=False), threads=1)
    assert runner.fixed_batch == 1
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    out = runner(x)
    with torch.no_grad():
        want = _Net()(torch.from_numpy(x)).numpy()
    assert out.shape == (5, 1, 32, 32) and np.abs(out - want).max() < 1e-4


@pytest.mark.openvino
def test_openvino_runs_a_batch_1_model_on_any_batch(batch1_onnx, tmp_path):
    import openvino as ov

    from edgecut.runtime.openvino_runner import OpenVinoRunner

    ov.save_model(ov.convert_model(str(batch1_onnx)), str(tmp_path / "model.xml"))
    runner = OpenVinoRunner(tmp_path / "model.xml", ModelSpec(input_size=(32, 32), dynamic_size=False), threads=1)
    assert runner.fixed_batch == 1
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    one_by_one = np.concatenate([runner(x[i:i + 1]) for i in range(3)])
    assert runner(x).shape == (3, 1, 32, 32) and np.array_equal(runner(x), one_by_one)
