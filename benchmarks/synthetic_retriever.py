"""Test R@1 of the synthetic default retriever by epoch count: train ``SYNTHETIC_RETRIEVER``'s recipe (each count a
full cosine schedule) on the cached synthetic benchmark, build the test split from it, print the retriever row, the
training wall/CPU time and the load average.

    python benchmarks/synthetic_retriever.py --epochs 10,20,40 --work /tmp/synret
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", default="10,20,40")
    ap.add_argument("--work", type=Path, default=Path("/tmp/synret"))
    args = ap.parse_args()
    from skyrank.benchmarks.synthetic import ensure_synthetic
    from skyrank.build import SYNTHETIC_RETRIEVER, build_dataset
    from skyrank.retrievers.train import train_retriever

    root = ensure_synthetic(progress=False)
    r = SYNTHETIC_RETRIEVER
    print(f"recipe: {r} (epochs overridden); cores {len(os.sched_getaffinity(0))}")
    print(f"{'epochs':>6} {'train wall s':>12} {'train CPU s':>11} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'AP':>6}  load")
    for epochs in (int(e) for e in args.epochs.split(",")):
        out = args.work / f"e{epochs}"
        t0, c0 = time.perf_counter(), time.process_time()
        ck = train_retriever(
            "synthetic", root, out, arch=r["arch"], image_size=r["image_size"], epochs=epochs,
            batch_size=r["batch_size"], num_workers=r["num_workers"], progress=False, resume=True,
        )  # fmt: skip
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + children.ru_utime + children.ru_stime
        rep = build_dataset(
            checkpoint=ck, arch=r["arch"], image_size=r["image_size"], out=out / "ds", overwrite=True,
            splits=("test",), progress=False,
        )  # fmt: skip
        m = rep.stats[0].metrics
        print(f"{epochs:>6} {wall:>12.0f} {cpu:>11.0f} {m['R@1']:>6.1f} {m['R@5']:>6.1f} {m['R@10']:>6.1f} "
              f"{m['AP']:>6.1f}  {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
