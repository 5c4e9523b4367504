"""What a training run shows and how it is stopped: the progress bar and epoch lines, and SIGTERM as Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

class SignalGuard:
    """Turn SIGTERM into a clean stop at the end of the current step (Ctrl-C already is)."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> SignalGuard:
        with contextlib.suppress(ValueError):  # not the main thread
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, *_: Any) -> None:
        self.hit = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


class EpochBar:
    """Progress over an epoch's steps (a bar on a terminal, a plain line at a steady pace in a log),
    one line printed per epoch."""

    def __init__(self, enabled: bool, epochs: int, steps: int, batch: int = 1) -> None:
        from edgecut.progress import Tracker

        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.tracker = Tracker("epoch", steps, enabled=enabled, unit="images", per_step=batch, transient=False)

    def __enter__(self) -> EpochBar:
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.tracker.__exit__(*exc)

    def start_epoch(self, epoch: int, done: int) -> None:
        self.tracker.restart(f"epoch {epoch + 1}/{self.epochs}", self.steps, done)

    def step(self, logs: dict[str, float]) -> None:
        self.tracker.advance(1, " ".join(f"{k} {v:.3g}" for k, v in logs.items()))

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.tracker.note(epoch_line(record, self.epochs))


SHOWN = (("loss", "loss", ".4f"), ("lr", "lr", ".2e"), ("val_iou", "val IoU", ".4f"), ("val_mae", "MAE", ".4f"))


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One short line per epoch: loss, learning rate, val IoU and MAE, time (every metric is in history.json)."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}"]
    parts += [f"{label} {record[key]:{fmt}}" for key, label, fmt in SHOWN if isinstance(record.get(key), (int, float))]
    if "elapsed_s" in record:
        parts.append(f"{record['elapsed_s']:.0f} s")
    return "  ".join(parts)
