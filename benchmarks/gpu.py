"""One prepared run on a lent GPU machine; the program is the package benchmarks/gpu/ (its cli.py says
what the run measures and how to call it).

    python benchmarks/gpu.py --prepare             # here: ECSSD at 320 px and the missing wheels into .gpu/
    python benchmarks/gpu.py --dry-run             # here: plan, carried files and size, the device command
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke   # here, on the CPU: every part, tiny, seconds
    python3 benchmarks/gpu.py --out $OUT           # on the GPU machine: the command --dry-run prints
"""

import sys

from gpu.cli import main

if __name__ == "__main__":
    sys.exit(main())
