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
    """A rich progress bar over steps, one line printed per epoch."""

    def __init__(self, enabled: bool, epochs: int, steps: int) -> None:
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[logs]}"))
            self.task = None

    def __enter__(self) -> EpochBar:
        if self.progress:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, done: int) -> None:
        if self.progress:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps,
                                               completed=done, logs="")

    def step(self, logs: dict[str, float]) -> None:
        if self.progress:
            text = " ".join(f"{k} {v:.3g}" for k, v in logs.items())
            self.progress.update(self.task, advance=1, logs=text)

    def end_epoch(self, record: dict[str, Any]) -> None:
        if self.progress:
            self.progress.console.print(epoch_line(record, self.epochs), highlight=False)


SHOWN = (("loss", "loss", ".4f"), ("lr", "lr", ".2e"), ("val_iou", "val IoU", ".4f"), ("val_mae", "MAE", ".4f"))


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One short line per epoch: loss, learning rate, val IoU and MAE, time (every metric is in history.json)."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}"]
    parts += [f"{label} {record[key]:{fmt}}" for key, label, fmt in SHOWN if isinstance(record.get(key), (int, float))]
    if "elapsed_s" in record:
        parts.append(f"{record['elapsed_s']:.0f} s")
    return "  ".join(parts)
