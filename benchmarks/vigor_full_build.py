"""Build time and peak memory of the largest new benchmark: VIGOR same-area at full count (52,605 test queries
against 90,618 tiles; train 52,609 against the same tiles) with precomputed embeddings.

Writes the full-count placeholder tree (:mod:`skyrank.benchmarks.synthetic.trees`, hard links), a ``.npy`` of
float32 embeddings (``--dim``, Sample4Geo ConvNeXt-B: 1024) with an ids sidecar (each panorama near its positive
tile's direction), then runs ``skyrank build`` in a child process and reports its wall time and peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

    PYTHONPATH=$PWD python benchmarks/vigor_full_build.py --work /tmp/vigor-full [--splits test] [--dim 1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks.synthetic import trees


def prepare(work: Path, dim: int) -> tuple[Path, Path]:
    root = work / "VIGOR"
    if not (root / "splits").is_dir():
        t0 = time.perf_counter()
        trees.write_vigor(root, trees.VIGOR_FULL, trees.placeholder_source(root))
        print(f"tree written in {time.perf_counter() - t0:.1f} s", flush=True)
    emb = work / "vigor_same.npy"
    if not emb.is_file():
        t0 = time.perf_counter()
        bench = get_benchmark("vigor_same")
        tiles = bench.load_split(root, "test").gallery
        panos = [q for s in ("train", "test") for q in bench.load_split(root, s).queries]
        rng = np.random.default_rng(0)
        base = rng.standard_normal((len(tiles), dim), dtype=np.float32)
        row = {t.label: i for i, t in enumerate(tiles)}
        vectors = np.empty((len(tiles) + len(panos), dim), np.float32)
        vectors[: len(tiles)] = base + 0.3 * rng.standard_normal(base.shape, dtype=np.float32)
        for j, q in enumerate(panos):
            noise = np.random.default_rng(zlib.crc32(q.image_id.encode())).standard_normal(dim, dtype=np.float32)
            vectors[len(tiles) + j] = base[row[q.label]] + 1.2 * noise
        np.save(emb, vectors)
        (work / "vigor_same.ids.txt").write_text("".join(f"{r.image_id}\n" for r in (*tiles, *panos)))
        print(f"embeddings ({vectors.shape[0]:,} x {dim}) written in {time.perf_counter() - t0:.1f} s", flush=True)
        del vectors, base  # the build runs in a child process: keep this one small
    return root, emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--splits", default="test")
    ap.add_argument("--keep", action="store_true", help="keep the tree, embeddings and output")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    root, emb = prepare(args.work, args.dim)
    out = args.work / "skyrank-vigor_same"
    cmd = [sys.executable, "-m", "cli", "build", "--dataset", "vigor_same", "--root", str(root), "--retriever",
           "precomputed", "--checkpoint", str(emb), "--splits", args.splits, "--out", str(out), "--overwrite"]
    print("$ " + " ".join(cmd[2:]), flush=True)
    with open("/proc/loadavg") as f:
        print(f"load before: {f.read().strip()}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open("/proc/loadavg") as f:
        print(f"load after: {f.read().strip()}")
    print(f"skyrank build vigor_same --splits {args.splits} (dim {args.dim}): wall {wall:.1f} s, peak RSS "
          f"{peak_mib:,.0f} MiB")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
        trees.remove_templates(root)


if __name__ == "__main__":
    main()
