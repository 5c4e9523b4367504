"""What the run needs prepared here, before the device call: ECSSD at 320 px and the wheels the
device's python lacks, in ``.gpu/`` (ignored by git, carried with ``carry [".gpu"]``); the checks
``--dry-run`` makes (plan, data, wheels, the size of what travels) and the device command it prints."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import ROOT

from .plan import CARRY_LIMIT, DEADLINE_S, DEVICE_TIMEOUT_S, EIGHT_MINUTES, chosen_plan, plan_problems

GPU_DIR = ROOT / ".gpu"  # ignored by git; carried to the device with carry [".gpu"]
DATA_DIR = GPU_DIR / "ecssd320"
WHEEL_DIR = GPU_DIR / "wheels"
ECSSD_SPLITS = {"train": 800, "val": 200}  # names per split, as /work/shared/data/README.md lists them
MAX_SIDE = 320  # --prepare resizes every image so its longer side is this (never up)
PREPARED = "PREPARED.json"
# what the device's python (3.12, torch, no pydantic) lacks to import edgecut; versions from constraints.txt
WHEELS = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "typing_extensions")
PIP_DOWNLOAD = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform",
                "manylinux1_x86_64"]  # the command of /work/.library/device/README.md
PIP_INSTALL = ("python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade "
               "--target /tmp/site .gpu/wheels/*.whl")


def pins(constraints: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """Normalised distribution name -> pinned version."""
    out = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not name.startswith("#"):
            out[norm(name)] = version.strip()
    return out


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_problems(folder: Path, versions: dict[str, str]) -> tuple[list[str], list[str]]:
    """(problems, wheel files) of the carried wheels: one per package, at its pinned version, for CPython 3.12."""
    files = sorted(p.name for p in folder.glob("*.whl")) if folder.is_dir() else []
    problems = []
    for pkg in WHEELS:
        mine = [f for f in files if norm(f.split("-")[0]) == pkg]
        want = versions.get(pkg)
        if not mine:
            problems.append(f"no wheel of {pkg}=={want} in {folder}")
        elif len(mine) > 1:
            problems.append(f"{len(mine)} wheels of {pkg} in {folder} (keep one): {mine}")
        elif mine[0].split("-")[1] != want:
            problems.append(f"{mine[0]} is not the pinned {pkg}=={want}")
        elif not ("-py3-none-any" in mine[0] or ("cp312-cp312" in mine[0] and "x86_64" in mine[0])):
            problems.append(f"{mine[0]} is not for CPython 3.12 on x86-64")
    extra = [f for f in files if norm(f.split("-")[0]) not in WHEELS]
    if extra:
        problems.append(f"wheels not in the list, which the install would also put first on the path: {extra}")
    return problems, files


def data_problems(root: Path) -> tuple[list[str], dict[str, int]]:
    """(problems, counts) of the prepared data set: every split name with its image and mask, ECSSD's counts."""
    if not (root / PREPARED).is_file():
        return [f"{root} is not prepared (no {PREPARED}): run python benchmarks/gpu.py --prepare"], {}
    counts = {sub: len(list((root / sub).glob("*"))) for sub in ("images", "masks")}
    problems = []
    for split, want in ECSSD_SPLITS.items():
        f = root / "splits" / f"{split}.txt"
        names = f.read_text().split() if f.is_file() else []
        counts[split] = len(names)
        if len(names) != want:
            problems.append(f"{f}: {len(names)} names, ECSSD's {split} split has {want}")
        missing = [n for n in names if not (root / "images" / f"{n}.jpg").is_file()
                   or not (root / "masks" / f"{n}.png").is_file()]
        if missing:
            problems.append(f"{len(missing)} {split} name(s) without images/NAME.jpg and masks/NAME.png: {missing[:5]}")
    total = sum(ECSSD_SPLITS.values())
    for sub in ("images", "masks"):
        if counts[sub] != total:
            problems.append(f"{root / sub}: {counts[sub]} files, expected {total}")
    return problems, counts


def tree_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else 0


def carried_size(root: Path = ROOT, carry: Sequence[str] = (".gpu",)) -> dict[str, Any]:
    """What a device call sends: tracked and untracked-not-ignored files, plus the carried folders."""
    p = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True)
    if p.returncode != 0:
        # the device tool sends git's view of the tree; without a work tree there is nothing to count
        return {"error": f"{root} is not a git work tree ({p.stderr.decode().strip()}): run from a clone"}
    files = [root / f for f in p.stdout.decode().split("\0") if f]
    tree = sum(f.lstat().st_size for f in files if f.is_file() or f.is_symlink())
    carried = {c: tree_bytes(root / c) for c in carry}
    ignored = {}
    for c in carry:
        # the trailing slash: a folder pattern matches a folder that does not exist yet (a clean clone)
        q = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", c.rstrip("/") + "/"], capture_output=True)
        ignored[c] = q.returncode == 0
    total = tree + sum(carried.values())
    return {"tree_files": len(files), "tree_bytes": tree, "carried_bytes": carried, "total_bytes": total,
            "total_mib": round(total / 2**20, 2), "limit_mib": CARRY_LIMIT // 2**20, "ignored": ignored}


def device_command(deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    """The device tool's run call a later session makes (the pip line is the device README's)."""
    extra = "" if deadline_s == DEADLINE_S else f" --deadline-s {deadline_s:g}"
    command = (f"{PIP_INSTALL} && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; set -o pipefail; "
               f"python3 benchmarks/gpu.py --out $OUT{extra} 2>&1 | tee $OUT/gpu.log")
    return {"command": command, "carry": [".gpu"], "timeout_s": DEVICE_TIMEOUT_S}


def dry_run(args) -> int:
    from edgecut import io

    plan, deadline = chosen_plan(args)
    report: dict[str, Any] = {"plan": [asdict(p) for p in plan], "deadline_s": deadline,
                              "budget_total_s": sum(p.budget_s for p in plan), "problems": {}}
    report["problems"]["plan"] = plan_problems(plan, deadline)
    report["problems"]["data"], report["data_counts"] = data_problems(DATA_DIR)
    report["problems"]["wheels"], report["wheels"] = wheel_problems(WHEEL_DIR, pins())
    size = carried_size()
    report["carried"] = size
    if "error" in size:
        report["problems"]["carried"] = [size["error"]]
    else:
        report["problems"]["carried"] = ([] if size["total_bytes"] <= CARRY_LIMIT else
                                         [f"{size['total_mib']} MiB would travel, over {CARRY_LIMIT // 2**20} MiB"])
        report["problems"]["carried"] += [f"{c} is not ignored by git: it would travel twice, or not as carried"
                                          for c, ok in size["ignored"].items() if not ok]
    report["device_run"] = device_command(deadline)
    report["ready"] = not any(report["problems"].values())
    print("plan (seconds):")
    for p in plan:
        print(f"  {p.name:12s} budget {p.budget_s:5.0f}  at least {p.min_s:4.0f}  {p.what}")
    print(f"  {'total':12s} budget {report['budget_total_s']:5.0f}  deadline {deadline:.0f} s "
          f"(under {EIGHT_MINUTES:.0f} s: {deadline < EIGHT_MINUTES})")
    print(f"data {DATA_DIR.relative_to(ROOT)}: {report['data_counts'] or 'not prepared'}")
    print(f"wheels {WHEEL_DIR.relative_to(ROOT)}: {report['wheels'] or 'none'}")
    if "error" not in size:
        print(f"carried: {size['tree_files']} repo files {size['tree_bytes'] / 2**20:.2f} MiB + "
              + ", ".join(f"{c} {b / 2**20:.2f} MiB" for c, b in size["carried_bytes"].items())
              + f" = {size['total_mib']} MiB of {size['limit_mib']} MiB")
    for what, problems in report["problems"].items():
        for problem in problems:
            print(f"NOT READY ({what}): {problem}")
    print("device run (tool `run`):")
    print(json.dumps(report["device_run"], indent=1))
    print("READY" if report["ready"] else "NOT READY: fix the lines above (python benchmarks/gpu.py --prepare)")
    if args.out:
        io.write_json(args.out / "dry_run.json", report)
    return 0 if report["ready"] else 1


def prepare(args) -> int:
    """ECSSD at 320 px on the longer side (JPEG images, PNG masks, the same splits) and the wheels, into .gpu/."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    import numpy as np

    from edgecut import io
    from edgecut.data.folder import find_samples

    GPU_DIR.mkdir(exist_ok=True)
    problems, counts = data_problems(DATA_DIR)
    if problems:
        tmp = DATA_DIR.with_name(DATA_DIR.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("images", "masks", "splits"):
            (tmp / sub).mkdir(parents=True)
        samples = [s for split in ECSSD_SPLITS for s in find_samples(args.source, split)]

        def one(sample) -> None:
            image, mask = io.read_image(sample.image), io.read_mask(sample.mask)
            h, w = image.shape[:2]
            scale = min(1.0, MAX_SIDE / max(h, w))
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            if scale < 1.0:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                mask = np.where(cv2.resize(mask, size, interpolation=cv2.INTER_AREA) >= 128, 255, 0).astype(np.uint8)
            io.write_bytes(tmp / "images" / f"{sample.name}.jpg", io.encode_image(image, ".jpg"), fsync=False)
            io.write_bytes(tmp / "masks" / f"{sample.name}.png", io.encode_image(mask, ".png"), fsync=False)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(one, samples))
        for split in ECSSD_SPLITS:
            shutil.copyfile(args.source / "splits" / f"{split}.txt", tmp / "splits" / f"{split}.txt")
        io.write_json(tmp / PREPARED, {"source": str(args.source), "max_side": MAX_SIDE,
                                       "images": "JPEG (edgecut.io.encode_image)", "masks": "PNG, area-resized, "
                                       "thresholded at 128 to 0 / 255", "splits": ECSSD_SPLITS,
                                       "made_by": "python benchmarks/gpu.py --prepare"})
        shutil.rmtree(DATA_DIR, ignore_errors=True)
        os.replace(tmp, DATA_DIR)
        problems, counts = data_problems(DATA_DIR)
    print(f"{DATA_DIR.relative_to(ROOT)}: {counts}, {tree_bytes(DATA_DIR) / 2**20:.2f} MiB", flush=True)
    versions = pins()
    wproblems, files = wheel_problems(WHEEL_DIR, versions)
    if wproblems:
        shutil.rmtree(WHEEL_DIR, ignore_errors=True)
        WHEEL_DIR.mkdir()
        cmd = [sys.executable, *PIP_DOWNLOAD, "-d", str(WHEEL_DIR), *(f"{w}=={versions[w]}" for w in WHEELS)]
        print(shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        wproblems, files = wheel_problems(WHEEL_DIR, versions)
    print(f"{WHEEL_DIR.relative_to(ROOT)}: {files}, {tree_bytes(WHEEL_DIR) / 2**20:.2f} MiB", flush=True)
    for p in problems + wproblems:
        print(f"problem: {p}")
    return 1 if problems or wproblems else 0
