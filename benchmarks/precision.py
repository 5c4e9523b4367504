"""fp32 against bf16 autocast: one training step of the small and the full-size U-Net teacher.

    python benchmarks/precision.py                       # the quickstart-sized and the full-size teacher
    python benchmarks/precision.py --cases 16:96:8       # width:size:batch
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/precision.py --results /tmp/p.json

Times what `--precision auto` compares (edgecut.training.loop.step_ms) in both precisions, whether or
not this CPU has native bf16, prints it with the CPU's flags and what `auto` would choose here, and
records it in benchmarks/results/precision/precision.json. Emulated bf16 is slow: the full-size cases
take minutes on a CPU without it. Measure on a quiet machine. Cases and results:
benchmarks/README.md#precisionpy-fp32-against-bf16-autocast-in-training
"""

from __future__ import annotations

import time

import torch

from common import RESULTS, environment, parser

CASES = ("16:96:8", "64:160:4", "64:320:1")


def time_case(width: int, size: int, batch: int, steps: int) -> dict:
    from edgecut.models.registry import create_model
    from edgecut.training.losses import SegmentationObjective
    from edgecut.training.loop import step_ms

    torch.manual_seed(0)
    device = torch.device("cpu")
    model = create_model("unet", width=width).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    data = {"image": torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last),
            "mask": (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()}
    objective = SegmentationObjective()
    out = {"width": width, "size": size, "batch": batch, "params_m": round(sum(p.numel() for p in model.parameters())
                                                                          / 1e6, 2)}
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        out[f"{precision}_ms"] = round(step_ms(model, objective, data, precision, device, steps=steps), 1)
        out[f"{precision}_wall_s"] = round(time.perf_counter() - t0, 1)
    out["bf16_speedup"] = round(out["fp32_ms"] / out["bf16_ms"], 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__, threads=None, results=RESULTS / "precision" / "precision.json")
    ap.add_argument("--cases", nargs="+", default=list(CASES), help="width:size:batch")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per precision (after one untimed)")
    args = ap.parse_args(argv)

    from edgecut import io
    from edgecut.env import native_bf16
    from edgecut.training.loop import candidates

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = environment()
    tried, why = candidates(torch.device("cpu"))
    print(f"CPU: {machine['cpu']['model']}, flags {' '.join(machine['cpu']['flags'])}; "
          f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads")
    print(f"native bf16: {native_bf16()}; --precision auto tries {', '.join(tried)}" + (f" ({why})" if why else ""))
    rows = []
    print(f"{'model':>22} {'input':>9} {'fp32 ms':>9} {'bf16 ms':>9} {'bf16 x':>7}  auto")
    for case in args.cases:
        width, size, batch = (int(v) for v in case.split(":"))
        row = time_case(width, size, batch, args.steps)
        row["auto_chooses"] = "bf16" if "bf16" in tried and row["bf16_ms"] < row["fp32_ms"] else "fp32"
        rows.append(row)
        print(f"{f'U-Net width {width}':>22} {f'{size} px b{batch}':>9} {row['fp32_ms']:>9.1f} {row['bf16_ms']:>9.1f} "
              f"{row['bf16_speedup']:>6.2f}x  {row['auto_chooses']}", flush=True)
    record = {"command": "python benchmarks/precision.py " + " ".join(argv or []), "rows": rows,
              "native_bf16": native_bf16(), "auto_tries": tried, "cpu_capability":
              torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(), "machine": machine,
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    io.write_json(args.results, record)
    print(f"wrote {args.results}")
    return record


if __name__ == "__main__":
    main()
