"""Encode once (issue 22): a two-direction build encodes each image once, against the code before that change.

Both builds run ``skyrank build --direction d2s --direction s2d`` in their own process on one synthetic benchmark in
University-1652's layout (random-weight ``convnext_atto`` Sample4Geo at 64 px, ids only, no embeddings config),
interleaved, best of ``--repeats``. On that layout the train split's d2s and s2d use the same drone and satellite
folders (every train image was encoded twice before), while the test split's queries and galleries are different
folders (no saving there). ``--baseline-code`` is a checkout of the code before the change, for example::

    mkdir /tmp/skyrank-before && git archive c774552 | tar -x -C /tmp/skyrank-before
    python benchmarks/encode_once.py --work /tmp/eo --baseline-code /tmp/skyrank-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SIZE = dict(locations=96, distractors=32, views=16, image_size=64)


def _build(code: Path, root: Path, out: Path, threads: int) -> dict:
    report = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "cli", "build", "--dataset", "synthetic", "--root", str(root), "--retriever",
           "sample4geo", "--arch", "convnext_atto", "--image-size", "64", "--random-weights", "--direction", "d2s",
           "--direction", "s2d", "--ids-only", "--no-embeddings", "--batch-size", "64", "--device", "cpu",
           "--out", str(out), "--overwrite", "--quiet", "--json", str(report)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    timings = json.loads(report.read_text())["timings"]
    return {"wall": wall, "encode": timings["encode"] + timings["decode"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--baseline-code", type=Path, required=True, help="a checkout of the code before encode-once")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from skyrank.benchmarks.synthetic import generate_synthetic
    from skyrank.build_plan import plan_build

    root = args.work / "bench"
    if not root.is_dir():
        generate_synthetic(root, progress=False, **SIZE)
    plan = plan_build(dataset="synthetic", root=root, retriever="sample4geo", arch="convnext_atto", image_size=64,
                      random_weights=True, directions=("d2s", "s2d"), out=args.work / "plan", progress=False)
    print(f"benchmark {SIZE}; images encoded: {plan.encodes_per_direction:,} before (each direction apart), "
          f"{plan.images_to_encode:,} now")  # fmt: skip
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, code in (("before", args.baseline_code), ("encode once", HERE)):
            r = _build(code.resolve(), root, args.work / name.replace(" ", "-"), args.threads)
            if name not in best or r["wall"] < best[name]["wall"]:
                best[name] = r
    print(f"{'code':<12} {'encode+decode s':>16} {'build wall s':>13}")
    for name, r in best.items():
        print(f"{name:<12} {r['encode']:>16.1f} {r['wall']:>13.1f}")
    b, n = best["before"], best["encode once"]
    print(f"saving: encode+decode {100 * (1 - n['encode'] / b['encode']):.1f}%, "
          f"build wall {100 * (1 - n['wall'] / b['wall']):.1f}%")  # fmt: skip
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().strip()}")


if __name__ == "__main__":
    main()
