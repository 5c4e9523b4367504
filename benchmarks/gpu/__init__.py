"""The prepared GPU run (``python benchmarks/gpu.py``), one module per part of it, each read top to bottom:

- plan.py: the six parts with their budgets, the deadline, the device's limits, the sizes of a run;
- scheduler.py: the deadline scheduler, a part's record, the run every part receives;
- parts.py: the six measurements (env, pytest, torch, tensorrt, onnxruntime; train in train.py);
- prepare.py: here, before the device call: ``--prepare`` (data, wheels) and ``--dry-run``;
- cli.py: the command's options.
"""
