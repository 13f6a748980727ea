"""``skyrank.mining.mine`` end to end with exact search vs an IVF index, on a large synthetic gallery.

Mining a SkyRank row needs more than the top-m: every positive's full rank. In exact mode that takes each query's
scores against the whole gallery (an O(Q N d) product). With an approximate index, a query whose candidate pool
holds its positives is scored on the pool alone, and only the others against the whole gallery, so mining scales
with the queries the index misses. This script times both on the clustered embeddings of ``search.py`` (each query
is a noisy copy of one reference, its single positive; every reference has its own label), then compares the rows.

    python benchmarks/mine.py                                   # N=100,000, Q=4,000
    python benchmarks/mine.py --n 1000000 --queries 20000       # a million-tile gallery
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from search import PeakRss, clustered_embeddings  # benchmarks/search.py

from skyrank.mining import mine


def run(n: int, n_queries: int, dim: int, m: int, fast_build: bool, seed: int) -> None:
    refs, queries, source = clustered_embeddings(n, n_queries, dim, seed, return_sources=True)
    g_ids = [f"sat/{i:07d}" for i in range(n)]
    q_ids = [f"drone/{i:07d}" for i in range(n_queries)]
    q_labels = [g_ids[j] for j in source]
    print(f"data: {n:,} references x {dim}-d, {n_queries:,} queries (one positive each), m={m}", flush=True)
    results = {}
    for kind in ("exact", "ivf"):
        with PeakRss() as mem:
            t = time.perf_counter()
            rows, info = mine(q_ids, q_labels, queries, g_ids, g_ids, refs, m=m, index=kind,
                              index_params={"deterministic": not fast_build}, return_info=True)
            seconds = time.perf_counter() - t
        results[kind] = rows
        shown = {k: info[k] for k in ("nlist", "nprobe", "recall_at_m", "build_seconds") if k in info}
        print(f"{kind:>5}: mine {seconds:8.1f} s (index build included)  peak RSS +{mem.peak_delta / 2**20:6.0f} MiB"
              f"  {shown}", flush=True)
        results[kind + "_s"] = seconds
    same = np.mean([a["retrieved_ids"] == b["retrieved_ids"] and a["positive_ranks"] == b["positive_ranks"]
                    for a, b in zip(results["ivf"], results["exact"], strict=True)])
    gt_in = np.mean([r["gt_rank"] <= m for r in results["ivf"]])
    print(f"\nIVF mining is {results['exact_s'] / results['ivf_s']:.1f}x faster than exact mining (build included); "
          f"{100 * same:.2f}% of the rows are identical (ids and ranks); ground truth in the top-{m}: "
          f"{100 * gt_in:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="references (default 100,000)")
    parser.add_argument("--queries", type=int, default=4_000, help="queries (default 4,000)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--fast-build", action="store_true", help="multi-threaded k-means (not deterministic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.n, args.queries, args.dim, args.m, args.fast_build, args.seed)


if __name__ == "__main__":
    main()
