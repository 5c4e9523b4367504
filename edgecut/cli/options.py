"""Options several commands share, declared once, so the same flag reads the same in every ``--help``.

Use one as the parameter's type and give its default as usual: ``train_split: TrainSplit = None``.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

TrainSplit = Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/train.txt if present).")]
ValSplit = Annotated[Optional[str], typer.Option(help="Split file or name (default: splits/val.txt if present).")]
TrainDevice = Annotated[str, typer.Option(help="Training device: auto | cpu | cuda | cuda:N")]
TorchThreads = Annotated[Optional[int], typer.Option(help="Torch CPU threads.")]
Autocast = Annotated[str, typer.Option(help="auto | bf16 | fp16 | fp32 (autocast).")]
Workers = Annotated[int, typer.Option(help="Data-loader processes.")]
Ema = Annotated[Optional[float], typer.Option(help="EMA decay, e.g. 0.999.")]
SaveEvery = Annotated[int, typer.Option(help="Also checkpoint every N steps inside an epoch.")]
ResumeRun = Annotated[bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")]
ParityCount = Annotated[Optional[int], typer.Option(help="Use this many of --parity-data's images (seeded).")]
Tolerance = Annotated[Optional[list[str]], typer.Option(
    help="Lower the parity bar: KEY=VALUE with max_abs_diff, mask_iou (mean), mask_iou_min (worst image) or "
         "metric_drop (repeatable).")]
