"""Safe image/weights reading and atomic writing (edgecut.io)."""

from __future__ import annotations

import json
import os
import pathlib
import pickle

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from edgecut import io
from edgecut.errors import DataWarning, EdgecutError, InputError, OutputError, UnsafeFileError

TINY_KW = {"width": 4, "depth": 2}


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_names(err: pytest.ExceptionInfo, path) -> None:
    assert str(path) in str(err.value)
    assert err.value.path == os.fspath(path)


# --------------------------------------------------------------------------- read_image


def test_read_jpeg_rgb(tmp_path):
    p = tmp_path / "a.jpg"
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200  # red: checks the channel order is RGB, not BGR
    Image.fromarray(rgb).save(p, quality=95)
    out = io.read_image(p)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert abs(int(out[..., 0].mean()) - 200) <= 3
    assert out[..., 1].max() <= 5 and out[..., 2].max() <= 5


def test_read_png_rgba_composited_over_white(tmp_path):
    p = tmp_path / "a.png"
    rgba = np.zeros((8, 10, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)  # junk colour under transparent pixels
    rgba[:4, :, 3] = 255  # top half opaque
    rgba[4:, :, 3] = 0  # bottom half fully transparent
    rgba[4, 0] = (10, 20, 30, 128)  # one half-transparent pixel
    Image.fromarray(rgba, "RGBA").save(p)
    out = io.read_image(p)
    assert out.shape == (8, 10, 3)
    assert (out[:4] == (10, 20, 30)).all()
    assert (out[5:] == 255).all()
    assert (out[4, 1:] == 255).all()
    half = out[4, 0].astype(int)
    expected = np.array([(10 * 128 + 255 * 127) / 255, (20 * 128 + 255 * 127) / 255, (30 * 128 + 255 * 127) / 255])
    assert np.abs(half - expected).max() <= 2


def test_read_gray_png_gives_three_equal_channels(tmp_path):
    p = tmp_path / "g.png"
    gray = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9)
    Image.fromarray(gray, "L").save(p)
    out = io.read_image(p)
    assert out.shape == (12, 9, 3) and out.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(out[..., c], gray)


def test_read_palette_png(tmp_path):
    p = tmp_path / "p.png"
    idx = np.zeros((6, 7), np.uint8)
    idx[:, 3:] = 1
    img = Image.fromarray(idx, "P")
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.save(p)
    with Image.open(p) as check:
        assert check.mode == "P"
    out = io.read_image(p)
    assert out.shape == (6, 7, 3)
    assert (out[:, :3] == (255, 0, 0)).all()
    assert (out[:, 3:] == (0, 0, 255)).all()


def test_read_palette_png_with_transparency_goes_over_white(tmp_path):
    p = tmp_path / "pt.png"
    idx = np.zeros((4, 4), np.uint8)
    idx[:, 2:] = 1
    img = Image.fromarray(idx, "P")
    img.putpalette([12, 34, 56, 0, 255, 0] + [0] * (254 * 3))
    img.info["transparency"] = 0
    img.save(p, transparency=0)
    out = io.read_image(p)
    assert (out[:, :2] == 255).all()
    assert (out[:, 2:] == (0, 255, 0)).all()


def test_read_16bit_gray_png(tmp_path):
    p = tmp_path / "deep.png"
    a = np.zeros((5, 6), np.uint16)
    a[0] = 65535
    a[1] = 32896
    a[2] = 0
    a[3] = 257 * 10  # 10 in 8-bit terms
    assert cv2.imwrite(str(p), a)
    out = io.read_image(p)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert (out[0] == 255).all()
    assert (np.abs(out[1].astype(int) - 128) <= 1).all()
    assert (out[2] == 0).all()
    assert (out[3] == 10).all()


@pytest.mark.parametrize("channels", [3, 4])
def test_read_16bit_colour_png(tmp_path, channels):
    p = tmp_path / "deep_rgb.png"
    a = np.zeros((3, 4, channels), np.uint16)
    a[..., 2] = 65535  # cv2 order: BGR(A) -> red in RGB
    if channels == 4:
        a[..., 3] = 65535
    assert cv2.imwrite(str(p), a)
    out = io.read_image(p)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert (out == (255, 0, 0)).all()


def test_read_exif_rotated_jpeg_is_upright(tmp_path):
    p = tmp_path / "rot.jpg"
    img = np.zeros((20, 40, 3), np.uint8)  # H 20, W 40
    img[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(p, exif=exif.tobytes(), quality=95)
    out = io.read_image(p)
    assert out.shape == (40, 20, 3)
    # after a clockwise turn the left (white) half is at the top
    assert out[:20].mean() > 200 and out[20:].mean() < 50


def _truncate(path: pathlib.Path) -> None:
    """Cut a file to its first half, as an interrupted download leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_read_truncated_jpeg_is_input_error_naming_file(tmp_path):
    p = tmp_path / "cut.jpg"
    Image.fromarray(_noise(64, 64)).save(p, quality=90)
    _truncate(p)
    with pytest.raises(InputError) as e:
        io.read_image(p)
    _assert_names(e, p)


def test_read_text_renamed_jpg_is_input_error(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n" * 10)
    with pytest.raises(InputError) as e:
        io.read_image(p)
    _assert_names(e, p)
    assert "not an image" in str(e.value)


def test_read_missing_file(tmp_path):
    p = tmp_path / "nope.png"
    with pytest.raises(InputError) as e:
        io.read_image(p)
    _assert_names(e, p)
    assert "not found" in str(e.value)


def test_read_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        io.read_image(tmp_path)


def test_pixel_cap(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(_noise(20, 20)).save(p)
    with pytest.raises(InputError) as e:
        io.read_image(p, max_pixels=100)
    _assert_names(e, p)
    assert "400" in str(e.value)
    assert io.read_image(p, max_pixels=400).shape == (20, 20, 3)
    with pytest.raises(InputError):
        io.read_mask(p, max_pixels=100)


def test_input_error_is_an_edgecut_error():
    assert issubclass(InputError, EdgecutError)
    assert issubclass(UnsafeFileError, InputError)
    e = InputError("/x/y.png", "broken", "fix it")
    assert str(e) == "/x/y.png: broken (fix it)"
    assert str(InputError(None, "broken")) == "broken"


# --------------------------------------------------------------------------- read_mask


def test_read_mask_of_rgba_takes_alpha(tmp_path):
    p = tmp_path / "m.png"
    rgba = np.full((6, 5, 4), 255, np.uint8)  # white colour everywhere
    rgba[..., 3] = 0
    rgba[2:4, 1:3, 3] = 200
    Image.fromarray(rgba, "RGBA").save(p)
    with pytest.warns(DataWarning, match="alpha channel"):
        m = io.read_mask(p)
    assert m.shape == (6, 5) and m.dtype == np.uint8
    assert np.array_equal(m, rgba[..., 3])


def test_read_mask_of_16bit_png_scales_to_8bit(tmp_path):
    p = tmp_path / "m16.png"
    a = np.zeros((4, 4), np.uint16)
    a[:2] = 65535
    a[2, :] = 32896
    assert cv2.imwrite(str(p), a)
    with pytest.warns(DataWarning, match="16-bit or float"):
        m = io.read_mask(p)
    assert m.dtype == np.uint8 and m.shape == (4, 4)
    assert (m[:2] == 255).all() and (m[3] == 0).all()
    assert (np.abs(m[2].astype(int) - 128) <= 1).all()


def test_read_mask_of_gray_saved_as_rgb_is_its_gray_value_without_a_note(tmp_path, recwarn):
    p = tmp_path / "c.png"
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[0] = 255
    rgb[1] = 128
    Image.fromarray(rgb).save(p)
    m = io.read_mask(p)
    assert m.shape == (3, 3)
    assert (m[0] == 255).all() and (m[1] == 128).all() and (m[2] == 0).all()
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_read_mask_of_one_colour_takes_the_largest_channel_with_a_note(tmp_path, channel):
    p = tmp_path / "red.png"
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2, :, channel] = 255  # pure red, green or blue: luminance would give 76, 150 or 29
    rgb[2, :, channel] = 100  # a soft edge keeps its value
    Image.fromarray(rgb).save(p)
    with pytest.warns(DataWarning, match=f"{tmp_path}: colour masks are read as the largest of R, G and B"):
        m = io.read_mask(p)
    assert (m[:2] == 255).all() and (m[2] == 100).all() and (m[3] == 0).all()
    assert io.decode_mask(p)[1] == "colour"


def test_read_mask_notes_nothing_for_gray_jpeg_noise_or_prediction_maps(tmp_path, recwarn):
    p = tmp_path / "m.png"
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = (250, 255, 252)  # a gray mask through a lossy encoder: channels a few levels apart
    Image.fromarray(rgb).save(p)
    assert io.decode_mask(p)[1] == "gray" and io.read_mask(p)[:4].min() >= 250
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    assert io.read_mask(tmp_path / "cut.png", note=False)[:4].min() == 255  # a cut-out's alpha, read on purpose
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


# --------------------------------------------------------------------------- paths and outputs


def test_special_files_are_named_for_what_they_are_and_never_opened(tmp_path):
    import os

    (tmp_path / "f.png").write_bytes(b"x")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    assert io.special_file(tmp_path / "f.png") is None
    assert "loops" in io.special_file(tmp_path / "loop.png")
    assert "broken symbolic link" in io.special_file(tmp_path / "gone.png")
    assert "named pipe" in io.special_file(tmp_path / "pipe.png")
    assert "folder" in io.special_file(tmp_path / "dir.png")
    assert io.special_file(tmp_path / "absent.png") == "not found"
    files, odd = io.image_entries(tmp_path)
    assert files == [tmp_path / "f.png"] and [p.name for p, _ in odd] == ["dir.png", "gone.png", "loop.png", "pipe.png"]
    with pytest.raises(InputError, match="loop.png: cannot be resolved .*loops"):
        io.resolved(tmp_path / "loop.png")
    for name in ("loop.png", "pipe.png", "gone.png"):
        with pytest.raises(InputError, match=name):
            io.read_image(tmp_path / name)
        with pytest.raises(InputError, match=name):
            io.read_json(tmp_path / name)


def test_check_output_refuses_at_once_what_could_not_be_written(tmp_path, monkeypatch):
    import errno
    import tempfile

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="it is a file, not a folder"):
        io.check_output(tmp_path / "file")
    with pytest.raises(OutputError, match="a file is in the way"):
        io.check_output(tmp_path / "file" / "out")
    with pytest.raises(OutputError, match="it is a folder"):
        io.check_output(tmp_path, folder=False)
    io.check_output(tmp_path / "new" / "deeper")  # made later, by whoever writes it
    io.check_output(tmp_path / "x.json", folder=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # the probe leaves nothing behind
    with pytest.raises(OutputError, match="MB are needed"):
        io.check_output(tmp_path / "out", need_bytes=2**62)

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="out: cannot write: permission denied"):
        io.check_output(tmp_path / "out")


def test_replaceable_refuses_a_file_edgecut_did_not_write_unless_asked(tmp_path):
    p = tmp_path / "x.json"
    io.replaceable(p, lambda _: False)  # nothing there: fine
    p.write_text("mine")
    with pytest.raises(OutputError, match="a file edgecut did not write is there"):
        io.replaceable(p, lambda _: False)
    io.replaceable(p, lambda _: True)
    io.replaceable(p, lambda _: False, overwrite=True)
    with pytest.raises(OutputError, match="it is a folder"):
        io.replaceable(tmp_path, lambda _: True)


def test_staging_of_dead_processes_is_swept_and_living_ones_are_kept(tmp_path):
    import os
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "art"
    (tmp_path / f".art.staging-{dead.pid}-abc").mkdir()
    (tmp_path / f".art.old-{dead.pid}").write_text("moved aside")
    (tmp_path / f".art.staging-{os.getpid()}-mine").mkdir()  # this process: alive
    (tmp_path / f".other.staging-{dead.pid}-x").mkdir()  # another output's
    with pytest.warns(DataWarning, match="removed 2 leftover staging folder"):
        io.sweep_stale(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".art.staging-{os.getpid()}-mine",
                                                          f".other.staging-{dead.pid}-x"]


# --------------------------------------------------------------------------- writing


def test_write_json_sorted_and_stable(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(a, {"zeta": 1, "alpha": {"y": 2, "x": np.float32(0.5)}, "path": pathlib.Path("p/q")})
    io.write_json(b, {"path": pathlib.Path("p/q"), "alpha": {"x": np.float32(0.5), "y": 2}, "zeta": 1})
    text = a.read_text()
    assert a.read_bytes() == b.read_bytes()
    assert text.endswith("}\n")
    assert text.index('"alpha"') < text.index('"path"') < text.index('"zeta"')
    assert text.index('"x"') < text.index('"y"')
    assert json.loads(text) == {"alpha": {"x": 0.5, "y": 2}, "path": "p/q", "zeta": 1}
    assert io.read_json(a) == json.loads(text)


def test_write_json_refuses_unknown_types(tmp_path):
    with pytest.raises(TypeError):
        io.write_json(tmp_path / "x.json", {"a": object()})
    assert [p.name for p in tmp_path.iterdir()] == []


def test_atomic_path_keeps_old_content_on_error(tmp_path):
    dest = tmp_path / "out.json"
    io.write_json(dest, {"v": 1})
    before = dest.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(dest) as tmp:
            assert tmp.parent == dest.parent and tmp != dest
            tmp.write_text("half written")
            raise RuntimeError("boom")
    assert dest.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_path_on_keyboard_interrupt_leaves_no_temp(tmp_path):
    dest = tmp_path / "sub" / "x.bin"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(dest) as tmp:
            tmp.write_bytes(b"abc")
            raise KeyboardInterrupt
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_atomic_path_success_replaces(tmp_path):
    dest = tmp_path / "x.txt"
    dest.write_text("old")
    with io.atomic_path(dest) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_read_json_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        io.read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError) as e:
        io.read_json(bad)
    _assert_names(e, bad)


def test_write_image_roundtrip_and_deterministic(tmp_path):
    rgba = np.dstack([_noise(9, 11), np.arange(99, dtype=np.uint8).reshape(9, 11)])
    io.write_image(tmp_path / "a.png", rgba)
    io.write_image(tmp_path / "b.png", rgba)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    back = np.array(Image.open(tmp_path / "a.png"))
    assert back.shape == (9, 11, 4)
    assert np.array_equal(back, rgba)
    with pytest.raises(ValueError):
        io.encode_image(rgba.astype(np.float32))


# --------------------------------------------------------------------------- weights


def _tiny_state() -> dict[str, torch.Tensor]:
    from edgecut.models.registry import create_model

    torch.manual_seed(0)
    return create_model("unet", **TINY_KW).state_dict()


def _assert_same_state(a, b) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_load_weights_safetensors_roundtrip(tmp_path):
    sd = _tiny_state()
    p = io.save_weights(tmp_path / "w.safetensors", sd, {"note": "x"})
    assert sorted(q.name for q in tmp_path.iterdir()) == ["w.safetensors"]
    _assert_same_state(io.load_weights(p), sd)


def test_load_weights_torch_state_dict(tmp_path):
    sd = _tiny_state()
    torch.save(sd, tmp_path / "w.pt")
    _assert_same_state(io.load_weights(tmp_path / "w.pt"), sd)


@pytest.mark.parametrize("key", ["state_dict", "model", "ema"])
def test_load_weights_unwraps_checkpoint(tmp_path, key):
    sd = _tiny_state()
    torch.save({key: sd, "epoch": 3, "lr": 0.1}, tmp_path / "ckpt.pth")
    _assert_same_state(io.load_weights(tmp_path / "ckpt.pth"), sd)


def test_load_weights_non_tensor_dict_is_input_error(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"epoch": 3}, p)
    with pytest.raises(InputError, match="state dict"):
        io.load_weights(p)


def test_load_weights_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        io.load_weights(tmp_path / "none.safetensors")


class _Touch:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_malicious_pickle_payload_is_live(tmp_path):
    """Control: the payload used below really runs code when unpickled unsafely."""
    marker = tmp_path / "ran"
    data = pickle.dumps(_Touch(marker), protocol=2)
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "pickle.dump-proto2"])
def test_load_weights_refuses_malicious_pickle(tmp_path, how):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": _Touch(marker)}}
    if how == "torch.save":
        torch.save(payload, p)
    else:
        with open(p, "wb") as f:
            pickle.dump(payload, f, protocol=2 if how.endswith("proto2") else pickle.DEFAULT_PROTOCOL)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError) as e:
        io.load_weights(p)
    assert isinstance(e.value, InputError)
    _assert_names(e, p)
    assert not marker.exists()


def test_load_model_refuses_malicious_pickle(tmp_path):
    from edgecut.models.store import load_model

    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    torch.save({"inc.0.weight": _Touch(marker)}, p)
    with pytest.raises(UnsafeFileError) as e:
        load_model(p, arch="unet", arch_kwargs=TINY_KW)
    _assert_names(e, p)
    assert not marker.exists()


def test_load_weights_corrupt_safetensors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(InputError) as e:
        io.load_weights(p)
    _assert_names(e, p)


def test_load_weights_truncated_safetensors(tmp_path):
    p = io.save_weights(tmp_path / "w.safetensors", _tiny_state())
    _truncate(p)
    with pytest.raises(InputError) as e:
        io.load_weights(p)
    _assert_names(e, p)


def test_load_weights_truncated_torch_zip(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(_tiny_state(), p)
    _truncate(p)
    with pytest.raises(InputError) as e:
        io.load_weights(p)
    _assert_names(e, p)


@pytest.mark.parametrize("content", [b"hello world, these are not weights\n", b""], ids=["text", "empty"])
def test_load_weights_garbage_torch_file_is_input_error(tmp_path, content):
    p = tmp_path / "junk.pt"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        io.load_weights(p)
    _assert_names(e, p)
