"""Safe reading and atomic writing of images, weights and json.

Reading never trusts a file: images are decoded with a pixel cap (decompression bombs),
every mode is brought to 8-bit RGB, EXIF orientation is applied, and anything unreadable is
one :class:`~edgecut.errors.InputError` naming the file. Weights are read from safetensors or
with ``torch.load(weights_only=True)``: nothing the user did not write is ever unpickled.

Writing is atomic: a temporary file in the same folder, then ``os.replace``. A reader sees
the old file or the new one, never half of one, and an interrupted write loses nothing. A write
that fails (read-only, no space, a file where a folder should be) is one
:class:`~edgecut.errors.OutputError` naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgecut.errors import DataWarning, InputError, OutputError, UnsafeFileError

if TYPE_CHECKING:
    import torch

F = TypeVar("F")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16/32-bit integer and float images
MAX_PIXELS = 100_000_000  # 100 MP: above any camera photo, far below a decompression bomb


# --------------------------------------------------------------------------- atomic writes

# errno -> (what went wrong, what to do), for one clear error instead of an OSError traceback
_WRITE_ERRORS = {
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("not permitted", "choose a folder you can write to"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the device", "free some space or choose another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or choose another disk"),
    errno.ENOTDIR: ("a file is in the way of a folder on the path", "choose a path whose parents are folders"),
    errno.EEXIST: ("a file is in the way of a folder on the path", "choose a path whose parents are folders"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


def output_error(path: str | os.PathLike, e: OSError) -> OutputError:
    """The one error for a failed write: the path, the cause in words, and the way out."""
    problem, fix = _WRITE_ERRORS.get(e.errno, (e.strerror or type(e).__name__, ""))
    return OutputError(path, problem, fix)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Inside the block, an ``OSError`` becomes an :class:`~edgecut.errors.OutputError` naming ``path``."""
    try:
        yield
    except OSError as e:
        raise output_error(path, e) from None


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p``, with one clear error when it cannot be done."""
    path = Path(path)
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def umask() -> int:
    """This process's umask (read without changing it for longer than two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def exclusive(target: str | os.PathLike) -> Iterator[None]:
    """Hold the one writer's lock on ``target`` (a lock file beside it) for the block; a second
    process that asks meanwhile gets one clear error instead of a half-merged folder."""
    import fcntl

    target = Path(target)
    lock = target.parent / f".{target.name}.lock"
    make_dirs(target.parent)
    while True:
        with writing(lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(target, f"another edgecut process (pid {owner}) is writing it",
                              "wait for it to finish, or choose another --out") from None
        if os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(fd).st_ino:
            break  # locked the file that is still there (not one its last holder just removed)
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def writes_out(fn: F) -> F:
    """Decorator of a step's front function: while it runs it holds the lock on its ``out``
    (:func:`exclusive`). Under torchrun only rank 0 writes, so only rank 0 takes it."""
    import functools
    import inspect

    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("RANK", "0") != "0":
            return fn(*args, **kwargs)
        with exclusive(signature.bind(*args, **kwargs).arguments["out"]):
            return fn(*args, **kwargs)

    wrapper.locks_out = True  # type: ignore[attr-defined]  # functools.wraps carries it to outer decorators
    return wrapper  # type: ignore[return-value]


def private_dir_made_public(path: Path) -> Path:
    """Give a ``tempfile.mkdtemp`` folder (mode 0700) the mode a plain ``mkdir`` would have."""
    os.chmod(path, 0o777 & ~umask())
    return path


def cache_dir() -> Path:
    """edgecut's cache folder: ``$EDGECUT_CACHE``, else ``$XDG_CACHE_HOME/edgecut`` or ``~/.cache/edgecut``."""
    root = os.environ.get("EDGECUT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecut"
    return Path(root)


def replace_dir(staging: Path, out: Path, overwrite: bool = True) -> None:
    """Replace ``out`` by the finished folder ``staging`` (an old ``out`` is moved aside first and
    removed last, so no moment leaves neither)."""
    old = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        elif overwrite:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, what: str, overwrite: bool = True) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write a whole artifact into: when the block succeeds it
    replaces ``out`` (:func:`replace_dir`); when it fails it is removed and ``out`` is as it was.
    Write errors name ``out``."""
    out = Path(out)
    make_dirs(out.parent)
    with writing(out.parent):
        staging = private_dir_made_public(Path(tempfile.mkdtemp(prefix=f".{out.name}.{what}-", dir=out.parent)))
    try:
        with writing(out):
            yield staging
            replace_dir(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    with writing(path):  # the error names the file asked for, whichever part of its path is wrong
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp makes it private; a finished file gets the usual mode
    try:
        with writing(path):
            yield tmp_path
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; ``fsync`` also flushes it to disk before the
    rename (turn it off for many small files that can be regenerated)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomic, stable json: sorted keys, two-space indent, trailing newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings), so saved and given
    settings compare equal."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})", "restore it or re-create it") from None


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (or its type), for one-line errors."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode any common image to an HxWx3 uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, CMYK and 16-bit images are converted;
    an alpha channel is composited over white (transparent pixels often hold junk colour).
    """
    from PIL import Image, ImageOps

    img = _open(path, max_pixels)
    with img:
        img = _exif_upright(ImageOps, img, path)
        if img.mode in _WIDE_MODES:
            return np.repeat(_to_uint8_gray(img)[..., None], 3, axis=2)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.array(img.convert("RGB"))


def read_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a mask (or matte) to an HxW uint8 array, 0 background .. 255 foreground.

    An RGBA file is read through its alpha channel; colour masks through their luminance. A mask
    that holds only the values 0 and 1 (a binary mask saved without scaling) is read as 0 / 255,
    with a note: read as it is, every pixel would be background. EXIF orientation is applied as
    :func:`read_image` applies it, so a mask and its image read from the same tags agree in shape.
    """
    from PIL import ImageOps

    img = _open(path, max_pixels)
    with img:
        mask = _mask_values(_exif_upright(ImageOps, img, path))
    if mask.max(initial=0) == 1:  # only 0 and 1
        warnings.warn(f"{Path(path).parent}: masks hold only the values 0 and 1; read as 0 and 255",
                      DataWarning, stacklevel=2)
        return mask * np.uint8(255)
    return mask


def _mask_values(img) -> np.ndarray:
    if img.mode in _WIDE_MODES:
        return _to_uint8_gray(img)
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = np.array(img.getchannel("A"))
        if alpha.min() < 255:  # a cut-out: the alpha is the mask
            return alpha
    return np.array(img.convert("L"))


def _open(path: str | os.PathLike, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "not a file")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 MP; edgecut's own cap decides below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(path, "not an image file (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:  # PIL refuses above twice its own limit, before edgecut can look
        raise InputError(path, f"image is above the cap of {max_pixels} pixels ({first_line(e)})",
                         "resize it first") from None
    except Exception as e:  # OSError, ValueError, SyntaxError, struct.error, ...: PIL's parsers on junk
        raise InputError(path, f"cannot read image ({type(e).__name__}: {first_line(e)})",
                         "re-export or re-download it") from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise InputError(path, f"image is {w}x{h} = {w * h} pixels, above the cap of {max_pixels}",
                         "resize it first, or raise max_pixels if you trust the file")
    if w == 0 or h == 0:
        img.close()
        raise InputError(path, "image has zero size")
    try:
        img.load()
    except Exception as e:  # OSError, ValueError, SyntaxError, struct.error, ...: a corrupt stream
        img.close()
        raise InputError(path, f"corrupt or truncated image ({e})", "re-export or re-download it") from None
    return img


def _exif_upright(ImageOps, img, path):
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return img


def _to_uint8_gray(img) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        top = 1.0 if float(np.nanmax(a)) <= 1.0 else 255.0
        return (np.clip(np.nan_to_num(a) / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    a = a.astype(np.int64)
    # I;16 is 16-bit by definition; a 32-bit "I" image (PIL's name for some 16-bit PNGs) is
    # taken as 8-bit data only when no value exceeds 255.
    top = 65535 if img.mode.startswith("I;16") or a.max() > 255 else 255
    return ((np.clip(a, 0, top) * 255 + top // 2) // top).astype(np.uint8)


def encode_image(array: np.ndarray, suffix: str = ".png", png_compression: int = 3,
                 params: Sequence[int] | None = None) -> bytes:
    """Encode an RGB, RGBA or gray uint8 array; deterministic bytes for the same input.
    ``params``: OpenCV's ``imwrite`` flags instead of the defaults below."""
    import cv2

    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
    suffix = suffix.lower()
    if params is None:
        params = ([cv2.IMWRITE_PNG_COMPRESSION, png_compression] if suffix == ".png" else
                  [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix in (".jpg", ".jpeg") else [])
    ok, buf = cv2.imencode(suffix, a, list(params))
    if not ok:
        raise ValueError(f"could not encode image as {suffix}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write an image atomically; the format follows the suffix (.png keeps alpha)."""
    path = Path(path)
    return write_bytes(path, encode_image(array, path.suffix or ".png"))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


# --------------------------------------------------------------------------- weights


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from a torch file without unpickling code.

    A checkpoint dict holding ``state_dict``, ``model`` or ``ema`` is unwrapped.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(path, f"corrupt safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            path, f"refused: not a plain weights file; loading it would run code or build unknown objects "
            f"({first_line(e)})", "re-save the weights as safetensors or a plain state_dict") from None
    except Exception as e:  # torch's unpickler raises KeyError, IndexError, EOFError, ... on junk
        raise InputError(path, f"not a readable torch weights file ({type(e).__name__}: {first_line(e)})",
                         "give a .safetensors file or a state_dict saved with torch.save") from None
    for key in ("state_dict", "model", "ema"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(path, "does not hold a state dict of tensors")
    return dict(obj)


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Save a state dict as safetensors, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    return write_bytes(path, save(tensors, metadata=dict(metadata) if metadata else None))
