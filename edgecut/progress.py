"""What long work shows while it runs: a rich bar on a terminal, and in a log (a pipe, a file,
nohup, CI) a plain line at a steady pace (done/total, rate, time left) with no redraw characters.

Every long loop in edgecut goes through :class:`Tracker`; ``EDGECUT_PROGRESS_SECONDS`` sets the
pace of the plain lines (default 30 s; 0 prints one per step).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

EVERY_ENV = "EDGECUT_PROGRESS_SECONDS"
DEFAULT_EVERY_S = 30.0


def on_terminal() -> bool:
    """Whether standard output is a terminal that rich can redraw a bar on."""
    from rich.console import Console

    return Console().is_terminal


def every_s() -> float:
    """Seconds between two plain progress lines."""
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


def duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``4000`` -> ``1h06m``."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Tracker:
    """Progress of ``total`` steps (``None``: unknown, a spinner): ``advance``, ``update``, ``note``.

    ``per_step`` items of ``unit`` are done per step (a training step is a batch of images), so the
    rate reads in images/s. ``transient`` bars vanish when done; plain lines are never redrawn.
    """

    def __init__(self, description: str, total: int | None = None, *, enabled: bool = True, unit: str = "images",
                 per_step: int = 1, transient: bool = True, rate: bool = True) -> None:
        self.description, self.total, self.enabled, self.unit = description, total, enabled, unit
        self.per_step, self.rate_shown, self.done, self.info = per_step, rate, 0, ""
        self.terminal = enabled and on_terminal()
        self._every, self._start = every_s(), time.perf_counter()
        self._printed_at, self._printed, self._done_at_start = self._start, False, 0
        self._bar = self._task = None
        if self.terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")] \
                if total is not None else [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
            self._bar = Progress(*columns, transient=transient)
            self._task = self._bar.add_task(description, total=total, rate="", info="")

    def __enter__(self) -> Tracker:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.enabled and self._printed and exc[0] is None and self.total is not None and self.done != self.total:
            self._line()  # where a log's last line left off

    def rate(self) -> float:
        """Items of ``unit`` per second since the start (or the last ``restart``)."""
        counted = self.done - self._done_at_start
        return counted * self.per_step / max(time.perf_counter() - self._start, 1e-9)

    def restart(self, description: str | None = None, total: int | None = None, done: int = 0) -> None:
        """Start counting again (a new epoch): the rate and time left are measured from now."""
        self.description = description or self.description
        self.total = total if total is not None else self.total
        self.done, self._done_at_start, self.info = done, done, ""
        self._start = self._printed_at = time.perf_counter()
        if self._bar is not None:
            self._bar.reset(self._task, total=self.total, completed=done, description=self.description, rate="",
                            info="")

    def advance(self, steps: int = 1, info: str | None = None) -> None:
        self.done += steps
        if info is not None:
            self.info = info
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, info=self.info,
                             rate=f"{self.rate():.3g} {self.unit}/s" if self.rate_shown else "")
        elif time.perf_counter() - self._printed_at >= self._every:
            self._line()

    def update(self, description: str) -> None:
        """A new phase of a step without a count (a spinner's text; a plain line in a log)."""
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)
        elif self.enabled and time.perf_counter() - self._start >= self._every:  # short steps stay quiet
            self._line()

    def note(self, text: str) -> None:
        """A line that stays: printed above a bar, or as it is in a log."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def _line(self) -> None:
        now = time.perf_counter()
        parts = [self.description]
        if self.total is not None:
            parts.append(f"{self.done}/{self.total}")
            rate = self.rate()
            if self.rate_shown and self.done > self._done_at_start:
                parts.append(f"{rate:.3g} {self.unit}/s")
                steps_per_s = rate / self.per_step
                if steps_per_s > 0 and self.total > self.done:
                    parts.append(f"{duration((self.total - self.done) / steps_per_s)} left")
        else:
            parts.append(f"{duration(now - self._start)} so far")
        if self.info:
            parts.append(self.info)
        print("  ".join(parts), file=sys.stdout, flush=True)
        self._printed_at, self._printed = now, True
