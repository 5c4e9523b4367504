# over 500 lines: every read and write that touches the user's disk, with the checks they share (file kinds, outputs)
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
import stat
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edgecut import parsing
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
        holder = os.read(fd, 32).decode(errors="replace").strip()
        if holder.isdigit() and int(holder) != os.getpid() and not _alive(int(holder)):
            warnings.warn(f"{lock}: left by edgecut process {holder}, which no longer runs; taken over (it is "
                          "removed when this run ends)", DataWarning, stacklevel=3)
        sweep_stale(target)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def writes_out(fn: F | None = None, *, file: bool = False) -> Any:
    """Decorator of a step's front function: while it runs it holds the lock on its ``out``
    (:func:`exclusive`), which is checked first (:func:`check_output`: a folder, or a ``file``
    with ``@writes_out(file=True)``), so nothing fails late for a reason it could see at once.
    Under torchrun only rank 0 writes, so only rank 0 takes it."""
    import functools
    import inspect

    if fn is None:
        return functools.partial(writes_out, file=file)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("RANK", "0") != "0":
            return fn(*args, **kwargs)
        out = signature.bind(*args, **kwargs).arguments["out"]
        with exclusive(out):
            check_output(out, folder=not file)
            return fn(*args, **kwargs)

    wrapper.locks_out = True  # type: ignore[attr-defined]  # functools.wraps carries it to outer decorators
    return wrapper


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


_STAGED = ("staging", "import", "bundle", "old")  # what staged_dir and replace_dir leave beside an out


def sweep_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders (and files moved aside) that edgecut processes which no longer
    run left beside ``target`` (``.NAME.staging-PID-...``), with a note naming them."""
    import re

    target = Path(target)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:{'|'.join(_STAGED)})-(\d+)(?:-.*)?$")
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        warnings.warn(f"{target.parent}: removed {len(removed)} leftover staging folder(s) of edgecut processes that "
                      f"no longer run ({', '.join(p.name for p in removed[:3])})", DataWarning, stacklevel=3)
    return removed


def check_output(out: str | os.PathLike, *, folder: bool = True, need_bytes: int = 0) -> None:
    """Refuse at once an output that could not be written, before any work: a file where the
    ``folder`` goes (or a folder where the file goes), a place that takes no new file (read-only,
    permission denied), or fewer than ``need_bytes`` free on its disk."""
    out = Path(out)
    for parent in out.parents:  # a file in the way of a folder on the path
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise OutputError(out, "a file is in the way of a folder on the path",
                                  "choose a path whose parents are folders")
            break
    if out.exists() or out.is_symlink():
        kind = special_file(out) if not out.is_dir() else None
        if folder and not out.is_dir():
            raise OutputError(out, f"it is {kind or 'a file'}, not a folder", "choose another --out, or remove it")
        if not folder and out.is_dir():
            raise OutputError(out, "it is a folder", "give a file name")
        if not folder and kind:
            raise OutputError(out, f"it is {kind}", "give the name of a plain file")
    probe = out if folder and out.is_dir() else out.parent
    if not probe.is_dir():
        return  # made on the way (make_dirs): its parent took the lock file, so it takes this too
    with writing(out):
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".edgecut-probe-")
        os.close(fd)
        os.unlink(tmp)
    free = shutil.disk_usage(probe).free
    if need_bytes and free < need_bytes:
        raise OutputError(out, f"{need_bytes / 1e6:,.1f} MB are needed but only {free / 1e6:,.1f} MB are free on "
                          "its disk", "free some space or choose another disk")


def replaceable(path: str | os.PathLike, ours, overwrite: bool = False) -> None:
    """Refuse an existing output file that edgecut did not write (``ours(path)`` is False) unless
    ``overwrite``: the one overwrite policy of every file a command writes."""
    path = Path(path)
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        raise OutputError(path, "it is a folder", "give a file name")
    if not ours(path):
        raise OutputError(path, "a file edgecut did not write is there", "choose another name, or pass --overwrite "
                          "to replace it")


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
        sweep_stale(out)
        staging = private_dir_made_public(Path(tempfile.mkdtemp(prefix=f".{out.name}.{what}-{os.getpid()}-",
                                                                dir=out.parent)))
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


def read_json(path: str | os.PathLike, max_bytes: int = parsing.MAX_JSON_BYTES) -> Any:
    """A JSON file, read within edgecut's limits (:func:`edgecut.parsing.loads_json`): size, depth."""
    path = Path(path)
    problem = special_file(path)
    if problem:
        raise InputError(path, problem)
    if path.stat().st_size > max_bytes:
        raise InputError(path, f"{path.stat().st_size} bytes, above the limit of {max_bytes} for a JSON file",
                         "restore it or re-create it")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not valid JSON ({e})", "restore it or re-create it") from None
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None
    return parsing.loads_json(text, path, max_bytes=max_bytes)


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


# --------------------------------------------------------------------------- paths


def special_file(path: str | os.PathLike) -> str | None:
    """What keeps ``path`` from being read as a plain file, in words ("a symbolic link that loops",
    "a named pipe (FIFO)", "a folder", ...); None when it is one. Nothing is opened."""
    try:
        st = os.stat(path)
    except ValueError:
        return "not a usable file name (it holds a NUL character)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link that loops (it leads back to itself)"
        if os.path.islink(path):
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        if e.errno == errno.ENOENT:
            return "not found"
        return f"cannot be opened ({e.strerror or type(e).__name__})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket, not a file"
    return "a device, not a file"


def resolved(path: str | os.PathLike) -> Path:
    """``path`` made absolute with its symbolic links followed; a loop is one :class:`InputError`."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: "Symlink loop" (Python 3.11 and 3.12)
        raise InputError(path, f"cannot be resolved ({special_file(path) or first_line(e)})",
                         "remove or repair the symbolic link") from None


def image_entries(folder: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files directly inside ``folder`` (sorted, hidden ones skipped) and, apart, the
    entries named like images that are no plain files (folders, FIFOs, broken or looping links)
    with what each is."""
    files, odd = [], []
    for p in sorted(Path(folder).iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.name.startswith("."):
            continue
        problem = special_file(p)
        if problem is None:
            files.append(p)
        else:
            odd.append((p, problem))
    return files, odd


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


MASK_RULE = ("a mask is read through its alpha channel when it has one that is not all opaque; else a colour "
             "mask as the largest of R, G and B at each pixel (a pure red mask is foreground; one whose channels "
             "stay within 8 levels of each other is a gray mask saved as RGB); else as its gray value. 16-bit and "
             "float masks are scaled to 0..255, and a mask of only 0 and 1 is read as 0 and 255")
# encoding -> how such a mask is read; none of them is the 8-bit grayscale the data layout asks for
MASK_ENCODINGS = {
    "alpha": "has an alpha channel: read through it",
    "colour": "is in colour: each pixel read as the largest of its R, G and B values",
    "wide": "is 16-bit or float: scaled to 0..255",
    "binary": "holds only the values 0 and 1: read as 0 and 255",
}
# ... and the note read_mask gives, once per folder
MASK_NOTES = {
    "alpha": "masks with an alpha channel are read through the alpha",
    "colour": "colour masks are read as the largest of R, G and B at each pixel",
    "wide": "16-bit or float masks are scaled to 0..255",
    "binary": "masks hold only the values 0 and 1; read as 0 and 255",
}
_GRAY_SPREAD = 8  # colour channels this close everywhere are a gray mask saved as RGB (or JPEG noise)


def read_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, note: bool = True) -> np.ndarray:
    """Decode a mask (or matte) to an HxW uint8 array, 0 background .. 255 foreground, by one rule
    (:data:`MASK_RULE`). A mask that is not the 8-bit grayscale the data layout asks for (colour,
    alpha, 16-bit, only 0 and 1) is read by that rule with a :class:`DataWarning` once per folder
    (``note=False``: silently, for prediction maps and cut-outs); ``edgecut data check`` lists
    every such file. EXIF orientation is applied as :func:`read_image` applies it, so a mask and
    its image read from the same tags agree in shape."""
    mask, encoding = decode_mask(path, max_pixels)
    if note and encoding in MASK_NOTES:
        warnings.warn(f"{Path(path).parent}: {MASK_NOTES[encoding]} (edgecut data check lists them)",
                      DataWarning, stacklevel=2)
    return mask


def decode_mask(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """The mask :func:`read_mask` reads, and its encoding: ``gray`` (8-bit, as the layout asks),
    ``binary`` (only 0 and 1), ``colour``, ``alpha`` or ``wide`` (16-bit or float)."""
    from PIL import ImageOps

    img = _open(path, max_pixels)
    with img:
        mask, encoding = _mask_values(_exif_upright(ImageOps, img, path))
    if mask.max(initial=0) == 1:  # only 0 and 1
        return mask * np.uint8(255), "binary"
    return mask, encoding


def _mask_values(img) -> tuple[np.ndarray, str]:
    if img.mode in _WIDE_MODES:
        return _to_uint8_gray(img), "wide"
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.array(img.convert("RGBA").getchannel("A"))
        if alpha.min() < 255:  # a cut-out: the alpha is the mask
            return alpha, "alpha"
    if img.mode in ("L", "1"):
        return np.array(img.convert("L")), "gray"
    rgb = np.array(img.convert("RGB"))
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    return hi, "gray" if int((hi.astype(np.int16) - lo).max(initial=0)) <= _GRAY_SPREAD else "colour"


def _open(path: str | os.PathLike, max_pixels: int):
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    problem = special_file(path)
    if problem:
        raise InputError(path, "file not found" if problem == "not found" else problem)
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
    return image_entries(folder)[0]


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
