"""The cut-out pipeline: the same pixels as one image at a time, resumable, failures at the end,
bounded in what it holds, and the encodings it offers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgecut import io, runtime
from edgecut.cutout import RemoveConfig, compose, encode_cutout, remove_background
from edgecut.errors import EdgecutError


def _photos(folder, n: int = 9):
    """Photos of several sizes and aspect ratios (the pipeline batches them at the model's size)."""
    from edgecut.data.synth import render

    folder.mkdir()
    for i in range(n):
        image, _ = render(i, 48 + 8 * (i % 3), seed=2)
        io.write_image(folder / f"p{i}.{'png' if i % 2 else 'jpg'}", image[:, : 40 + 4 * i])
    return sorted(folder.iterdir())


def _one_at_a_time(files, runner, fmt="rgba"):
    """What edgecut remove wrote before the pipeline, as arrays: decode, run, resize back, compose."""
    spec = runner.spec
    out = {}
    for path in files:
        image = io.read_image(path)
        alpha = spec.resize_back(spec.to_probability(runner(spec.preprocess(image)))[0], image.shape[:2])
        out[path.stem] = compose(image, alpha, fmt)
    return out


@pytest.mark.parametrize("workers,batch", [(0, 1), (2, 1), (2, "auto"), (3, 2)])
def test_the_pipeline_writes_the_same_pixels_as_one_image_at_a_time(trained, tmp_path, workers, batch):
    files = _photos(tmp_path / "in")
    runner = runtime.load(trained, threads=1)
    expected = _one_at_a_time(files, runner)
    report = remove_background(files, runner, tmp_path / "out", RemoveConfig(workers=workers, batch=batch), progress=False)
    assert [p.name for p in report.written] == [f"{f.stem}.png" for f in files] and not report.failed
    for name, want in expected.items():
        got = _read_rgba(tmp_path / "out" / f"{name}.png")
        assert np.array_equal(got, want), name  # RGBA PNG: pixel for pixel


def _read_rgba(path):
    import cv2

    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(a, cv2.COLOR_BGRA2RGBA)


def test_a_stopped_run_resumes_and_overwrite_redoes(tiny_artifact, tmp_path):
    files = _photos(tmp_path / "in", 5)
    runner = runtime.load(tiny_artifact, threads=1)
    first = remove_background(files[:3], runner, tmp_path / "out", RemoveConfig(overwrite=False), progress=False)
    stamp = {p.name: p.stat().st_mtime_ns for p in first.written}
    again = remove_background(files, runner, tmp_path / "out", RemoveConfig(overwrite=False), progress=False)
    assert [p.name for p in again.skipped] == [f.name for f in files[:3]]
    assert [p.name for p in again.written] == [f"{f.stem}.png" for f in files[3:]]
    assert all((tmp_path / "out" / n).stat().st_mtime_ns == t for n, t in stamp.items())  # untouched
    redo = remove_background(files, runner, tmp_path / "out", RemoveConfig(overwrite=True), progress=False)
    assert len(redo.written) == 5 and not redo.skipped


def test_failures_are_reported_at_the_end_and_every_other_image_is_cut_out(tiny_artifact, tmp_path):
    files = _photos(tmp_path / "in", 6)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    seen = []
    report = remove_background([tmp_path / "in"], runtime.load(tiny_artifact), tmp_path / "out",
                               RemoveConfig(workers=2, batch="auto"), progress=False,
                               on_error=lambda p, m: seen.append(p.name))
    assert sorted(p.name for p, _ in report.failed) == ["broken.jpg", "empty.png"] == sorted(seen)
    assert sorted(p.name for p in report.written) == sorted(f"{f.stem}.png" for f in files)
    assert all(str(p) in msg for p, msg in report.failed)  # each message names its file


def test_in_flight_images_stay_bounded(tiny_artifact, tmp_path):
    """A long folder is not read into memory ahead of the model: loads run at most a few batches ahead."""
    files = _photos(tmp_path / "in", 24)
    runner = runtime.load(tiny_artifact, threads=1)
    lock, state = threading.Lock(), {"loaded": 0, "inferred": 0, "most": 0}
    read = io.read_image

    def counted_read(path, *a, **k):
        with lock:
            state["loaded"] += 1
            state["most"] = max(state["most"], state["loaded"] - state["inferred"])
        return read(path, *a, **k)

    class Counting:
        spec = runner.spec

        def __call__(self, x):
            with lock:
                state["inferred"] += len(x)
            return runner(x)

    import edgecut.cutout as cutout

    cutout.io.read_image, restore = counted_read, read
    try:
        report = remove_background(files, Counting(), tmp_path / "out", RemoveConfig(workers=2, batch=2), progress=False)
    finally:
        cutout.io.read_image = restore
    assert len(report.written) == 24
    assert state["most"] <= 2 * 2 + 2 + 2  # ahead = max(2 * batch, batch + workers), plus one batch being read


def test_encodings_and_their_refusals(tiny_artifact, tmp_path):
    import cv2

    files = _photos(tmp_path / "in", 2)
    runner = runtime.load(tiny_artifact)
    webp = remove_background(files, runner, tmp_path / "webp", RemoveConfig(encoding="webp"), progress=False)
    a = cv2.imread(str(webp.written[0]), cv2.IMREAD_UNCHANGED)
    assert webp.written[0].suffix == ".webp" and a.ndim == 3 and a.shape[2] == 4  # alpha kept
    jpg = remove_background(files, runner, tmp_path / "jpg", RemoveConfig(format="composite", encoding="jpg"),
                            progress=False)
    assert jpg.written[0].suffix == ".jpg" and io.read_image(jpg.written[0]).shape[2] == 3
    with pytest.raises(EdgecutError, match="no alpha"):
        remove_background(files, runner, tmp_path / "x", RemoveConfig(format="rgba", encoding="jpg"), progress=False)
    with pytest.raises(EdgecutError, match="--encoding"):
        encode_cutout(np.zeros((4, 4), np.uint8), "gif")
    with pytest.raises(EdgecutError, match="--batch"):
        remove_background(files, runner, tmp_path / "y", RemoveConfig(batch="many"), progress=False)


def test_the_cli_resumes_and_says_what_it_skipped(tiny_artifact, tmp_path):
    from typer.testing import CliRunner

    from edgecut.cli import app

    _photos(tmp_path / "in", 3)
    args = ["remove", str(tmp_path / "in"), "--model", str(tiny_artifact.path), "--out", str(tmp_path / "out")]
    def run(*extra):
        res = CliRunner().invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())  # the console wraps long lines

    assert "wrote 3 cut-out(s)" in run()
    again = run()
    assert "wrote 0 cut-out(s)" in again and "3 already there, skipped" in again
    assert "wrote 3 cut-out(s)" in run("--overwrite", "--workers", "0")


def test_the_cores_are_split_unless_the_model_is_the_bottleneck(tiny_artifact, tmp_path, monkeypatch):
    import time

    import edgecut.cutout as cutout
    from edgecut import env

    monkeypatch.setattr(env, "default_threads", lambda: 4)
    (photo,) = _photos(tmp_path / "in", 1)
    runner, workers = cutout.load_for_cutouts(tiny_artifact.path, threads=3, workers=2, probe=photo)
    assert (runner.threads, workers) == (3, 2)  # as given
    runner, workers = cutout.load_for_cutouts(tiny_artifact.path, probe=None)
    assert (runner.threads, workers) == (2, 2)  # nothing to time: the cores split in two
    real = runtime.load

    def slow_model(*a, **k):  # a model far slower than the image work (0.2 s against milliseconds)
        inner = real(*a, **k)

        class Slow:
            spec, threads = inner.spec, inner.threads

            def __call__(self, x):
                time.sleep(0.2)
                return inner(x)

        return Slow()

    monkeypatch.setattr(runtime, "load", slow_model)
    runner, workers = cutout.load_for_cutouts(tiny_artifact.path, probe=photo)
    assert (runner.threads, workers) == (4, 1)  # the model gets every core


def test_minmax_alpha_stretches_each_map_as_rembg_does():
    from edgecut.cutout import alpha_map

    prob = np.array([[0.2, 0.4], [0.6, 0.7]], np.float32)
    assert np.allclose(alpha_map(prob, "minmax"), [[0.0, 0.4], [0.8, 1.0]])
    assert np.array_equal(alpha_map(prob), prob)
    assert not alpha_map(np.full((2, 2), 0.3, np.float32), "minmax").any()  # a flat map has no foreground
