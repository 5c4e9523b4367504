"""Structured channel pruning with Torch-Pruning's dependency graph (Fang et al., CVPR 2023).

Removing output channels of a convolution also removes the matching input channels of every layer that reads
them; Torch-Pruning groups such coupled channels, so the pruned model stays consistent (the output head keeps its
channels). What edgecut adds: ``prune_model`` (uniform or global ratios, a MACs target, per-layer plans, channel
counts in multiples of 8, resumable iterative steps) and ``sensitivity`` with ``plan_from_sensitivity`` (per-layer
ratios under a metric budget). Pruned models are saved as an architecture plus a channel configuration
(models/channels.py). The artifact-level workflow (fine-tuning, resume, reports) is
:func:`edgecut.compress.prune.prune`.

Details: docs/design-decisions.md#prune
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecut import io
from edgecut._optional import require
from edgecut.errors import InputError, ModelError
from edgecut.models.channels import RESIZABLE
from edgecut.models.profile import count_macs, count_params
from edgecut.compress.config import Importance, PruneConfig, SensitivityConfig



@dataclass(frozen=True)
class PruneStats:
    params: int
    macs: int

    @classmethod
    def of(cls, model: nn.Module, size: tuple[int, int]) -> PruneStats:
        return cls(count_params(model), count_macs(model, size))


# --------------------------------------------------------------------------------------------
# the pruning itself


def prune_model(model: nn.Module, example_input: torch.Tensor, config: PruneConfig, *,
          macs_size: tuple[int, int] | None = None, grad_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
          on_step: Callable[[int, nn.Module], None] | None = None, start_step: int = 0,
          original: Mapping[str, int] | None = None) -> nn.Module:
    """Prune ``model`` in place and return it.

    ``example_input`` traces the graph (any valid size: small is fast). MACs targets are
    measured at ``macs_size`` (default: the example's size). ``grad_batches`` (images,
    masks) feed the taylor importance. ``on_step(k, model)`` runs after pruning step k
    (1-based), e.g. to fine-tune. To resume, pass ``start_step`` (steps already done) and
    ``original``, the group widths before the first step (``prunable_groups`` of the parent).
    """
    config.validate()
    _check_supported(model, config.ignore)
    macs_size = macs_size or tuple(example_input.shape[-2:])
    if config.importance == "taylor":
        grad_batches = list(grad_batches)
        if not grad_batches:
            raise ModelError("the taylor importance ranks channels by |weight x gradient| and needs data: "
                             "pass --data (or grad_batches), or use --importance l2")
    if original is None:
        if start_step:
            raise ValueError("resuming a pruning schedule needs the original group widths")
        original = prunable_groups(model, example_input, config.ignore)
    base_macs = count_macs(model, macs_size) if config.target_macs is not None else 0
    for k in range(start_step + 1, config.steps + 1):
        if config.target_macs is not None:  # a MACs schedule, linear from the start to the target
            target = base_macs - (base_macs - config.target_macs * 1e9) * (k - start_step) / (config.steps - start_step)
            ratio = _ratio_for_macs(model, example_input, config, target, macs_size, grad_batches)
            step_config = _replace(config, ratio=ratio, target_macs=None)
        elif config.scope == "global":  # the share of all channels, relative to what step k-1 left
            before, after = 1 - config.ratio * (k - 1) / config.steps, 1 - config.ratio * k / config.steps
            step_config = _replace(config, ratio=1 - after / before)
        else:  # every group to int(original * (1 - ratio * k / steps)) channels, rounded down
            step_config = _replace(config, ratio=0.0, layer_ratios=_layer_step_ratios(
                model, example_input, config, original, k))
        _prune_once(model, example_input, step_config, grad_batches)
        if on_step is not None:
            on_step(k, model)
    return model


def _kept(channels: int, ratio: float, round_to: int | None) -> int:
    kept = int(channels * (1 - ratio) + 1e-9)
    return kept - kept % round_to if round_to else kept


def _layer_step_ratios(model: nn.Module, example_input: torch.Tensor, config: PruneConfig,
                       original: Mapping[str, int], k: int) -> dict[str, float]:
    """Ratios, relative to the current widths, that bring each group to its width after step k.

    Targets are absolute (from the original widths), so rounding never compounds over steps.
    """
    current = prunable_groups(model, example_input, config.ignore)
    ratios = {}
    for name, now in current.items():
        total = config.layer_ratios.get(name, config.ratio or 0.0)
        if total <= 0:
            continue
        c0 = original.get(name, now)
        kept = _kept(c0, total * k / config.steps, config.round_to)
        if kept < 1:
            hint = f" or --round-to (now {config.round_to})" if config.round_to and config.round_to > 1 else ""
            raise ModelError(f"pruning ratio {total:g} would remove all {c0} channels of the group rooted at "
                             f"layer {name!r}; lower the ratio{hint}, or keep it whole with --ignore {name}")
        if kept < now:
            ratios[name] = 1 - (kept + 0.5) / now  # TP keeps int(now * (1 - ratio)) = kept
    return ratios


def prunable_groups(model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()) -> dict[str, int]:
    """Each group of coupled channels, named by its root layer, with its channel count."""
    tp = require("torch_pruning", "structured pruning")
    names = {m: n for n, m in model.named_modules()}
    pruner = _pruner(tp, model, example_input, PruneConfig(ratio=0.0, round_to=None, ignore=tuple(ignore)))
    return {names[g[0].dep.target.module]: pruner.DG.get_out_channels(g[0].dep.target.module)
            for g in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types)}


def _prune_once(model: nn.Module, example_input: torch.Tensor, config: PruneConfig,
                grad_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    tp = require("torch_pruning", "structured pruning")
    was_training = model.training
    model.eval()
    pruner = _pruner(tp, model, example_input, config)
    if config.scope == "uniform":
        _check_whole_groups(pruner, model, config)
    if config.importance == "taylor":
        _accumulate_gradients(model, grad_batches)
    pruner.step()
    model.zero_grad(set_to_none=True)
    model.train(was_training)


def _pruner(tp: Any, model: nn.Module, example_input: torch.Tensor, config: PruneConfig) -> Any:
    modules = dict(model.named_modules())
    unknown = sorted(set(config.ignore) - set(modules))
    if unknown:
        raise ModelError(f"no layer named {', '.join(unknown)} to ignore; see the names in "
                         "'edgecut prune MODEL --sensitivity' or model.named_modules()")
    with torch.no_grad():
        out_channels = model(example_input).shape[1]
    # The output head (as many output channels as the model has outputs) keeps its channels.
    ignored = [m for m in modules.values() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
               and getattr(m, "out_channels", getattr(m, "out_features", None)) == out_channels]
    ignored += [modules[n] for n in config.ignore]
    ratio_dict = {}
    for name, r in config.layer_ratios.items():
        if name not in modules:
            raise ModelError(f"the pruning plan names layer {name!r}, which this model does not have; "
                             "was the plan made for another model?")
        ratio_dict[modules[name]] = r
    importance = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
    }[config.importance]()
    ratio = config.ratio if config.ratio is not None else 0.0
    return tp.pruner.BasePruner(
        model, example_input, importance=importance, global_pruning=config.scope == "global",
        pruning_ratio=ratio, pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=config.max_layer_ratio
        if config.scope == "global" else 1.0, ignored_layers=ignored, round_to=config.round_to)


def _check_supported(model: nn.Module, ignore: Sequence[str]) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError("a TorchScript model cannot be pruned: prune the eager model (an artifact or weights "
                         "plus --arch) and export afterwards")
    kept = tuple(ignore)
    for name, m in model.named_modules():
        if isinstance(m, RESIZABLE) or not any(True for _ in m.parameters(recurse=False)):
            continue
        if any(name == k or name.startswith(k + ".") for k in kept):
            continue
        raise ModelError(f"layer {name!r} ({type(m).__name__}) holds weights edgecut cannot prune or resize "
                         "(it handles conv, transposed conv, linear, batch/group norm and PReLU layers); "
                         f"keep it whole with --ignore {name}, or replace it in the model")


def _check_whole_groups(pruner: Any, model: nn.Module, config: PruneConfig) -> None:
    """A uniform or planned ratio that would leave a group without channels is an error."""
    names = {m: n for n, m in model.named_modules()}
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        root = group[0].dep.target.module
        name = names[root]
        ratio = config.layer_ratios.get(name, config.ratio or 0.0)
        if ratio <= 0:
            continue
        channels = pruner.DG.get_out_channels(root)
        kept = int(channels * (1 - ratio))
        if config.round_to:
            kept -= kept % config.round_to
        if kept < 1:
            hint = f" or --round-to (now {config.round_to})" if config.round_to and config.round_to > 1 else ""
            raise ModelError(f"pruning ratio {ratio:g} would remove all {channels} channels of the group rooted at "
                             f"layer {name!r}; lower the ratio{hint}, or keep it whole with --ignore {name}")


def _accumulate_gradients(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    from edgecut.training.losses import bce_dice_loss

    model.zero_grad(set_to_none=True)
    for images, masks in batches:  # eval mode: batch-norm statistics stay as they are
        loss = bce_dice_loss(model(images), masks)
        loss.backward()


def _ratio_for_macs(model: nn.Module, example_input: torch.Tensor, config: PruneConfig, target: float,
                    macs_size: tuple[int, int], grad_batches: Sequence[Any]) -> float:
    """The smallest ratio whose pruned copy has at most ``target`` MACs (bisection)."""
    def macs_at(r: float) -> int | None:  # None: the ratio would empty a group
        trial = copy.deepcopy(model)
        try:
            _prune_once(trial, example_input, _replace(config, ratio=r, target_macs=None), grad_batches)
        except ModelError:
            return None
        return count_macs(trial, macs_size)

    if count_macs(model, macs_size) <= target:
        return 0.0
    lo, hi, best, least = 0.0, config.max_layer_ratio if config.scope == "global" else 0.95, None, None
    for _ in range(14):  # the ratio to within 0.0001
        mid = (lo + hi) / 2
        macs = macs_at(mid)
        if macs is not None:
            least = macs if least is None else min(least, macs)
        if macs is None or macs <= target:
            hi, best = mid, (mid if macs is not None else best)
        else:
            lo = mid
    if best is None:
        reached = f"the most that could be pruned leaves {least / 1e9:.3g} GMACs" if least else "no ratio works"
        raise ModelError(f"a target of {target / 1e9:.3g} GMACs cannot be reached ({reached}); raise --target-macs "
                         "or lower --round-to")
    return best


def _replace(config: PruneConfig, **changes: Any) -> PruneConfig:
    return dataclasses.replace(config, **changes)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every batch norm's running mean and variance on ``batches`` of images.

    Pruning removes channels whose contributions the next layers' statistics still expect;
    a few forward passes restore the statistics (no gradients, weights untouched), which
    often recovers much of the accuracy before any fine-tuning. Returns the images seen.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    seen = 0
    try:
        for images in batches:
            model(images)
            seen += images.shape[0]
    finally:
        for m, (momentum, training) in zip(norms, saved):
            m.momentum = momentum
            m.train(training)
        model.train(was_training)
    if norms and not seen:
        raise ModelError("batch-norm recalibration got no images")
    return seen


# --------------------------------------------------------------------------------------------
# sensitivity analysis


@dataclass(frozen=True)
class SensitivityRow:
    layer: str  # root layer of the group
    channels: int
    ratio: float
    kept: int  # channels left in the group
    macs: int
    macs_saved: float  # share of the model's MACs this pruning removes
    metric: float
    drop: float  # baseline metric minus this one (positive: worse)


def sensitivity(model: nn.Module, example_input: torch.Tensor, evaluate: Callable[[nn.Module], float],
                config: SensitivityConfig = SensitivityConfig(), *, macs_size: tuple[int, int] | None = None,
                grad_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = (),
                progress: bool = True) -> tuple[float, list[SensitivityRow]]:
    """Prune each group alone at each of ``config.ratios`` (ranked by ``config.importance``); returns the
    baseline metric and one row per trial.

    ``evaluate(model) -> float`` is a higher-is-better metric (e.g. IoU on held-out images).
    """
    from edgecut.progress import Tracker

    macs_size = macs_size or tuple(example_input.shape[-2:])
    grad_batches = list(grad_batches)
    ignore = config.ignore
    _check_supported(model, ignore)
    base_metric = float(evaluate(model))
    base_macs = count_macs(model, macs_size)
    groups = prunable_groups(model, example_input, ignore)
    rows = []
    with Tracker("sensitivity", len(groups) * len(config.ratios), enabled=progress, unit="trials") as bar:
        for layer, channels in groups.items():
            for r in config.ratios:
                trial = copy.deepcopy(model)
                alone = PruneConfig(ratio=0.0, importance=config.importance, round_to=config.round_to,
                                    ignore=tuple(ignore), layer_ratios={layer: r})
                try:
                    _prune_once(trial, example_input, alone, grad_batches)
                except ModelError:  # this ratio would empty the group: not a candidate
                    bar.advance()
                    continue
                kept = dict(trial.named_modules())[layer]
                kept_ch = getattr(kept, "out_channels", getattr(kept, "out_features", channels))
                macs = count_macs(trial, macs_size)
                metric = float(evaluate(trial))
                rows.append(SensitivityRow(layer, channels, r, kept_ch, macs, 1 - macs / base_macs, metric,
                                           base_metric - metric))
                bar.advance()
    return base_metric, rows


def plan_from_sensitivity(rows: Sequence[SensitivityRow], max_drop: float) -> dict[str, float]:
    """Per group, the largest ratio whose measured drop is at most ``max_drop`` (0: leave it).

    Drops measured one group at a time do not simply add up: the plan is a starting point,
    to be checked (and fine-tuned) as a whole.
    """
    plan: dict[str, float] = {}
    for row in rows:
        if row.drop <= max_drop and row.ratio > plan.get(row.layer, 0.0):
            plan[row.layer] = row.ratio
    return dict(sorted(plan.items()))


def write_sensitivity(out: str | os.PathLike, base_metric: float, rows: Sequence[SensitivityRow], metric: str,
                      plan: Mapping[str, float] | None = None, max_drop: float | None = None) -> list[Path]:
    """sensitivity.json / .csv / .md, the plot (when matplotlib is installed) and plan.json."""
    out = Path(out)
    io.make_dirs(out)
    written = [out / "sensitivity.json", out / "sensitivity.csv", out / "sensitivity.md"]
    io.write_json(written[0], {"metric": metric, "baseline": base_metric, "rows": [asdict(r) for r in rows]})
    header = ["layer", "channels", "ratio", "kept", "macs", "macs_saved", metric, "drop"]
    lines = [",".join(header)] + [",".join(str(v) for v in (r.layer, r.channels, r.ratio, r.kept, r.macs,
                                                            f"{r.macs_saved:.4f}", f"{r.metric:.4f}", f"{r.drop:.4f}"))
                                  for r in rows]
    io.write_text(written[1], "\n".join(lines) + "\n")
    md = [f"Baseline {metric}: {base_metric:.4f}. Each group pruned alone; drop = baseline minus pruned.", "",
          f"| layer | channels | ratio | kept | MACs saved | {metric} | drop |", "|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {r.layer} | {r.channels} | {r.ratio:g} | {r.kept} | {100 * r.macs_saved:.1f}% | {r.metric:.4f} | "
           f"{r.drop:+.4f} |" for r in rows]
    io.write_text(written[2], "\n".join(md) + "\n")
    if plan is not None:
        written.append(out / "plan.json")
        io.write_json(written[-1], {"max_drop": max_drop, "metric": metric, "layer_ratios": dict(plan)})
    try:
        written.append(_plot_sensitivity(out / "sensitivity.png", base_metric, rows, metric))
    except ImportError:
        pass
    return written


def _plot_sensitivity(path: Path, base_metric: float, rows: Sequence[SensitivityRow], metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(r.layer for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    cmap = plt.get_cmap("viridis", max(len(layers), 2))
    for i, layer in enumerate(layers):
        rs = [r for r in rows if r.layer == layer]
        ax1.plot([r.ratio for r in rs], [r.drop for r in rs], marker="o", color=cmap(i), label=layer)
        ax2.plot([100 * r.macs_saved for r in rs], [r.drop for r in rs], marker="o", color=cmap(i))
    ax1.set(xlabel="pruning ratio of the group", ylabel=f"{metric} drop", title=f"baseline {metric} {base_metric:.4f}")
    ax2.set(xlabel="MACs saved (%)", ylabel=f"{metric} drop", title="cost of each saving")
    for ax in (ax1, ax2):
        ax.axhline(0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def read_plan(path: str | os.PathLike) -> dict[str, float]:
    """A plan.json written by the sensitivity analysis (or by hand: {"layer_ratios": {...}})."""
    path = Path(path)
    data = io.read_json(path)
    ratios = data.get("layer_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, dict) or not all(isinstance(v, (int, float)) and not math.isnan(v)
                                               for v in ratios.values()):
        raise InputError(path, "is not a pruning plan (expected {\"layer_ratios\": {layer: ratio}})",
                         "write it with 'edgecut prune MODEL --sensitivity --max-drop D'")
    return {str(k): float(v) for k, v in ratios.items()}
