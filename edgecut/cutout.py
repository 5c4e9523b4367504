"""``remove``: cut the background out of images with any artifact, through its Runner.

Any size and image mode goes in; the mask is predicted at the ModelSpec's input size and
resized back to the original. A bad input is reported and skipped; the rest are written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from edgecut import io
from edgecut.errors import EdgecutError, InputError, NonFiniteOutput, OutputError

Format = Literal["rgba", "mask", "composite"]
Alpha = Literal["probability", "minmax"]  # alpha is the probability, or (as rembg) its min-max normalised map
ALPHAS = ("probability", "minmax")


def alpha_map(prob: np.ndarray, alpha: Alpha = "probability") -> np.ndarray:
    """The alpha of a cut-out from the model's probability map: as it is, or stretched to [0, 1] per image as
    rembg does (``minmax``), so a rembg user sees the same cut-outs from the same model."""
    if alpha == "minmax":
        lo, hi = float(prob.min()), float(prob.max())
        return (prob - lo) / (hi - lo) if hi > lo else np.zeros_like(prob)
    return prob
COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "green": (0, 177, 64)}


def parse_color(text: str) -> tuple[int, int, int]:
    """'white', '#RRGGBB' or 'R,G,B' -> an RGB tuple."""
    t = text.strip().lower()
    try:
        if t in COLORS:
            return COLORS[t]
        if t.startswith("#") and len(t) == 7:
            return tuple(int(t[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(x) for x in t.split(",")]
        if len(parts) == 3 and all(0 <= p <= 255 for p in parts):
            return tuple(parts)  # type: ignore[return-value]
    except ValueError:
        pass
    raise EdgecutError(f"--bg {text!r}: not a colour; use a name ({', '.join(COLORS)}), #RRGGBB or R,G,B")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders as the images directly inside them; an entry of a folder named like
    an image that is no file (a broken or looping link, a FIFO) is kept, to be reported as a failed
    input, while a sub-folder is not an input."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files, odd = io.image_entries(p)
            out.extend(sorted([*files, *(q for q, _ in odd if not q.is_dir())]))
        else:
            out.append(p)
    return out


def _resolved_or_none(path: Path) -> Path | None:
    try:
        return io.resolved(path)
    except InputError:  # a looping link: reported when its turn comes
        return None


def compose(image: np.ndarray, alpha: np.ndarray, fmt: Format, bg: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An RGB image and an alpha map in [0, 1] -> the requested output array (uint8)."""
    a8 = (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if fmt == "mask":
        return a8
    if fmt == "rgba":
        return np.dstack([image, a8])
    a = alpha[..., None].astype(np.float32)
    out = image.astype(np.float32) * a + np.asarray(bg, np.float32) * (1.0 - a)
    return (out + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class RemoveConfig:
    """What the cut-outs look like and how a run makes them (:func:`remove_background`)."""

    format: Format = "rgba"  # rgba: the image and its alpha; mask: the alpha alone; composite: on ``bg``
    bg: tuple[int, int, int] = (255, 255, 255)  # composite's background colour
    encoding: str = "png"  # png (lossless), webp or jpg (composite and mask only)
    alpha: Alpha = "probability"  # or minmax: each map stretched to [0, 1] first, as rembg does
    overwrite: bool = True  # False: skip inputs whose cut-out exists (a resumed run)
    workers: int | None = None  # threads for the image work (default: the cores split); 0: one image at a time
    batch: int | str = 1  # images per inference call, or "auto" (several where the model takes a batch)


@dataclass
class RemoveReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # their cut-out was there already (overwrite=False)
    seconds: float = 0.0  # wall time of the run

    @property
    def images_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


ENCODINGS = ("png", "webp", "jpg")
# PNG: zlib level 1, Huffman coding only, the Up filter. benchmarks/cutout.py --png-sweep on 40 RGBA ECSSD
# cut-outs (400x300): 4.0 ms and 249 KB each, against 13.5 ms and 214 KB at OpenCV's default (level 3)
# and 6.7 ms and 224 KB at level 1 with full deflate; the pixels are the same at every setting
PNG_PARAMS = ("IMWRITE_PNG_COMPRESSION", 1, "IMWRITE_PNG_STRATEGY", "IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY",
              "IMWRITE_PNG_FILTER", "IMWRITE_PNG_FILTER_UP")  # the device runner (targets/runner.py) writes the same
WEBP_QUALITY = 90
JPEG_QUALITY = 95
NO_ALPHA = "JPEG has no alpha channel: use --encoding jpg with --format composite or mask"
BATCH_AUTO = 4  # --batch auto: images per inference call where the model takes a batch


def encode_cutout(array: np.ndarray, encoding: str = "png") -> bytes:
    """A cut-out (RGBA, mask or composite array) as file bytes: PNG (lossless), WebP or JPEG."""
    import cv2

    if encoding == "png":
        params = [v if isinstance(v, int) else getattr(cv2, v) for v in PNG_PARAMS]
    elif encoding == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY]
    elif encoding == "jpg":
        if array.ndim == 3 and array.shape[2] == 4:
            raise EdgecutError(NO_ALPHA)
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    else:
        raise EdgecutError(f"--encoding {encoding!r}: use {', '.join(ENCODINGS)}")
    try:
        return io.encode_image(array, f".{encoding}", params=params)
    except ValueError:
        raise OutputError(f"(cut-out).{encoding}", "could not be encoded") from None


def cutout_threads(threads: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """(model threads, image-work threads) of a cut-out run: as given, else the cores split in two.
    benchmarks/cutout.py on 2 cores: the student OpenVINO INT8 at 320 px cut out 82 images/s with
    the model on 1 thread and 1 worker, 60-66 with 2 and 2 (they take each other's cores)."""
    from edgecut.env import default_threads

    cores = default_threads()
    model = threads or max(1, cores // 2)
    return model, max(1, cores - model) if workers is None else workers


MODEL_BOUND = 3.0  # the model on its share of the cores takes this many times an image's other work: give it all


def load_for_cutouts(model, *, device: str = "cpu", threads: int | None = None, workers: int | None = None,
                     probe: Path | None = None):
    """The Runner and the image-work threads for cutting out many images (what ``edgecut remove``
    uses). Given ``threads``, as given. Else the cores are split between the model and the image
    work (:func:`cutout_threads`), unless the model, timed on ``probe`` (the first input), takes
    more than MODEL_BOUND times the rest of an image's work: a heavy model (U^2-Netp at 320 px:
    2.2 images/s split, 3.7 on every core) then gets every core and the image work one thread."""
    import time

    from edgecut import runtime
    from edgecut.env import default_threads

    cores = default_threads()
    if threads is not None or device != "cpu" or cores < 2 or probe is None:
        model_threads, image_threads = cutout_threads(threads, workers)
        return runtime.load(model, device=device, threads=model_threads), image_threads
    model_threads, image_threads = cutout_threads(None, workers)
    runner = runtime.load(model, device=device, threads=model_threads)
    try:
        model_s, image_s = [], []
        for _ in range(3):  # the first round warms up (imports, allocations); the least of the others counts
            t0 = time.perf_counter()
            image = io.read_image(probe)
            x = runner.spec.preprocess(image)
            t1 = time.perf_counter()
            out = runner(x)
            t2 = time.perf_counter()
            alpha = runner.spec.resize_back(runner.spec.to_probability(out)[0], image.shape[:2])
            encode_cutout(compose(image, alpha, "rgba"))
            t3 = time.perf_counter()
            model_s.append(t2 - t1)
            image_s.append((t1 - t0) + (t3 - t2))
    except (InputError, OutputError, NonFiniteOutput):
        return runner, image_threads  # the run reports it
    if min(model_s[1:]) > MODEL_BOUND * min(image_s[1:]):
        return runtime.load(model, device=device, threads=cores), 1 if workers is None else workers
    return runner, image_threads


def remove_background(inputs: Sequence[str | os.PathLike], runner, out: str | os.PathLike,
                      config: RemoveConfig = RemoveConfig(), *, progress: bool = True, on_error=None,
                      on_progress=None) -> RemoveReport:
    """Write one cut-out per input into ``out`` (``config.encoding``: png, webp or jpg).

    Decoding and preprocessing, inference, and resizing back, composing, encoding and writing
    overlap: ``config.workers`` threads do the image work (0: everything in this thread, one image at a
    time) while this thread feeds the model ``config.batch`` images a call (``"auto"``: several where the
    model takes a batch); at most a few batches are in flight, so memory stays flat on any number
    of images. Files are renamed into place whole (no fsync each; one sync at the end).
    ``config.overwrite=False`` skips inputs whose cut-out exists (a resumed run). An input that cannot be
    read, a model output that is not finite, or a cut-out that cannot be written is reported
    (``on_error`` and the report) and the rest go on; a bad ``out`` folder is one error before any work.
    ``on_progress(done, total, images_per_s)`` is called as cut-outs finish. ``config.alpha="minmax"``
    stretches each probability map to [0, 1] first, as rembg does."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    encoding, workers = config.encoding, config.workers
    if encoding not in ENCODINGS:
        raise EdgecutError(f"--encoding {encoding!r}: use {', '.join(ENCODINGS)}")
    if encoding == "jpg" and config.format == "rgba":
        raise EdgecutError(NO_ALPHA)  # once, before any image, not once per image
    if config.alpha not in ALPHAS:
        raise EdgecutError(f"--alpha {config.alpha!r}: use {', '.join(ALPHAS)}")
    size = _batch_size(config.batch)
    started = time.perf_counter()
    out = io.make_dirs(out)
    files = expand_inputs(inputs)
    sources = {r for r in map(_resolved_or_none, files) if r is not None}
    used: set[str] = set()
    plan = [(path, out / f"{_unique(path.stem, used)}.{encoding}") for path in files]
    report = RemoveReport()
    if not config.overwrite:
        report.skipped = [path for path, dest in plan if dest.is_file()]
        plan = [(path, dest) for path, dest in plan if not dest.is_file()]
    job = _Job(runner, config, sources)
    results: dict[int, tuple[Path | None, str | None]] = {}
    tracker = _Progress(progress and len(plan) > 1, len(plan), on_progress)
    with tracker:
        if workers == 0:
            for i, (path, dest) in enumerate(plan):
                loaded = job.load(path, dest)
                results[i] = job.finish(*job.infer([loaded])[0]) if isinstance(loaded, _Loaded) else loaded
                tracker.advance()
        else:
            threads = cutout_threads(getattr(runner, "threads", None), workers)[1]
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edgecut-cutout") as pool:
                _pipeline(job, plan, pool, threads, size, results, tracker)
    for i, (path, _) in enumerate(plan):
        written, error = results[i]
        if error is None:
            report.written.append(written)
        else:
            report.failed.append((path, error))
            if on_error:
                on_error(path, error)
    if report.written:
        os.sync()  # every cut-out on disk once, instead of an fsync per file
    report.seconds = time.perf_counter() - started
    return report


def _batch_size(batch: int | str) -> int:
    if batch == "auto":
        return BATCH_AUTO
    try:
        size = int(batch)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise EdgecutError(f"--batch {batch!r}: a number of images (1 or more) or auto")
    return size


@dataclass
class _Loaded:
    path: Path
    dest: Path
    image: np.ndarray
    x: np.ndarray  # 1 x 3 x H x W


class _Job:
    """The three stages of one cut-out: load (decode, preprocess), infer (a batch: the only stage on
    the model's thread), finish (probability, resize back, compose, encode, write). An image's error
    becomes its (None, message) result, never an exception."""

    def __init__(self, runner, config: RemoveConfig, sources: set[Path]) -> None:
        self.runner, self.spec, self.config, self.sources = runner, runner.spec, config, sources
        self.batched = True  # cleared when the model refuses a batch of several

    def load(self, path: Path, dest: Path):
        try:
            if _resolved_or_none(dest) in self.sources:  # a looping link where it goes is replaced, not followed
                raise InputError(path, f"its cut-out would overwrite an input ({dest})", "choose another --out")
            image = io.read_image(path)
            return _Loaded(path, dest, image, self.spec.preprocess(image))
        except (InputError, OutputError) as e:
            return None, str(e)

    def infer(self, items: list[_Loaded]) -> list[tuple]:
        """(loaded, raw output) per item: one call for the batch where the model takes it."""
        from edgecut.errors import ModelError

        if len(items) > 1 and self.batched:
            try:
                out = self.runner(np.concatenate([it.x for it in items]))
                return [(it, out[k : k + 1]) for k, it in enumerate(items)]
            except (ModelError, ValueError):
                self.batched = False  # a model exported for batch 1: one image a call from now on
        return [(it, self.runner(it.x)) for it in items]

    def finish(self, it: _Loaded, output: np.ndarray):
        try:
            config = self.config
            prob = alpha_map(self.spec.to_probability(output)[0], config.alpha)
            alpha = self.spec.resize_back(prob, it.image.shape[:2])
            data = encode_cutout(compose(it.image, alpha, config.format, config.bg), config.encoding)
            return io.write_bytes(it.dest, data, fsync=False), None
        except (InputError, OutputError, NonFiniteOutput) as e:
            return None, str(e)


def _pipeline(job: _Job, plan, pool, threads: int, size: int, results: dict, tracker) -> None:
    """Loads run ahead in the pool (bounded), batches of ``size`` go through the model here, and
    finishing runs in the pool; at most about ``2 * (size + threads)`` images are held at once."""
    from collections import deque

    ahead = max(2 * size, size + threads)
    loading: deque = deque()
    finishing: deque = deque()
    todo = iter(enumerate(plan))

    def top_up() -> None:
        while len(loading) < ahead:
            nxt = next(todo, None)
            if nxt is None:
                return
            i, (path, dest) = nxt
            loading.append((i, pool.submit(job.load, path, dest)))

    def drain(limit: int) -> None:
        while len(finishing) > limit:
            i, fut = finishing.popleft()
            results[i] = fut.result()
            tracker.advance()

    top_up()
    while loading:
        chunk = []
        while loading and len(chunk) < size:
            i, fut = loading.popleft()
            got = fut.result()
            if isinstance(got, _Loaded):
                chunk.append((i, got))
            else:
                results[i] = got
                tracker.advance()
        top_up()
        if chunk:
            for (i, _), done in zip(chunk, job.infer([it for _, it in chunk])):
                finishing.append((i, pool.submit(job.finish, *done)))
        drain(ahead)
    drain(0)


class _Progress:
    """The progress of the cut-outs (a bar, or plain lines in a log), and the ``on_progress`` callback."""

    def __init__(self, show: bool, total: int, callback) -> None:
        from edgecut.progress import Tracker

        self.total, self.callback = total, callback
        self.tracker = Tracker("removing backgrounds", total, enabled=show)

    def __enter__(self):
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.tracker.__exit__(*exc)

    def advance(self) -> None:
        self.tracker.advance()
        if self.callback is not None:
            self.callback(self.tracker.done, self.total, self.tracker.rate())


def _unique(stem: str, used: set[str]) -> str:
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name
