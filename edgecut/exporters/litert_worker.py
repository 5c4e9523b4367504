"""The LiteRT conversion worker: runs inside the ``litert`` converter environment (:mod:`edgecut.converters.envs`).

A plain script: it imports torch, numpy, litert-torch and ai-edge-quantizer, never edgecut (the environment has its
own pydantic). ``python litert_worker.py JOB.json`` reads the job, writes the ``.tflite`` file and a report, and
exits 0; on failure it prints one line to stderr and exits 1. The job: ``program`` (a ``torch.export`` program saved
by edgecut), ``input`` (its N x C x H x W shape), ``out``, ``precision`` (fp32 | fp16 | int8), ``calib`` (an .npy of
preprocessed N x 3 x H x W images, for static int8), ``int8`` (static | dynamic), ``threads`` (calibration),
``report`` (where the report goes). fp32 is ``litert_torch.convert``; fp16 and int8 pass the fp32 file through
ai-edge-quantizer (weight-only float16; ``static_wi8_ai8``, or ``dynamic_wi8_afp32`` with ``"int8": "dynamic"``).

What each recipe does: docs/design-decisions.md#litert-worker
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path


def convert(job: dict) -> dict:
    import numpy as np
    import torch

    import litert_torch

    started = time.perf_counter()
    program = torch.export.load(job["program"])
    sample = (torch.zeros(job["input"], dtype=torch.float32),)
    out = Path(job["out"])
    fp32 = out if job["precision"] == "fp32" else out.with_name(out.stem + ".fp32.tflite")
    litert_torch.convert(program.module(), sample).export(str(fp32))
    report: dict = {"converter": f"litert_torch {litert_torch.__version__}"}
    if job["precision"] != "fp32":
        from ai_edge_quantizer import quantizer, recipe, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.qtyping import TFLOperationName

        qt = quantizer.Quantizer(str(fp32))
        if job["precision"] == "fp16":
            manager = recipe_manager.RecipeManager()
            manager.add_weight_only_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                           algorithm_key=AlgorithmName.FLOAT_CASTING)
            qt.load_quantization_recipe(manager.get_quantization_recipe())
            result = qt.quantize()
        elif job.get("int8") == "dynamic":
            qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
            result = qt.quantize()
        else:
            qt.load_quantization_recipe(recipe.static_wi8_ai8())
            name = _input_name(fp32)
            images = np.load(job["calib"])
            data = {"serving_default": [{name: images[i:i + 1]} for i in range(len(images))]}
            result = qt.quantize(qt.calibrate(data, num_threads=int(job.get("threads") or 1)))
            report["calibration_images"] = len(images)
        result.export_model(str(out), overwrite=True)
        fp32.unlink()
        from importlib.metadata import version

        report["quantizer"] = f"ai_edge_quantizer {version('ai-edge-quantizer')}"
    report["operators"] = _operators(out)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _input_name(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(model_path=str(path)).get_signature_list()["serving_default"]
    return signature["inputs"][0]


def _operators(path: Path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    ops = Counter(op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details())
    return dict(sorted(ops.items(), key=lambda kv: -kv[1]))


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text())
    try:
        report = convert(job)
    except Exception as e:  # one line for edgecut's error message; the full trace would name this script
        print(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:400], file=sys.stderr)
        return 1
    Path(job["report"]).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
