"""Exact vs IVF vs HNSW top-k search (SkyLink Eq. 1, arXiv 2603.08063) on clustered synthetic embeddings.

References are a Gaussian mixture on the unit sphere (``N / 100`` clusters, noise as large as the centres, so a
cluster's members have cosine about 0.5 with each other), not uniform random vectors, on which approximate
search is meaningless. Each query is a reference plus half as much noise again (a drone view near its satellite
tile). IVF's nprobe and HNSW's efSearch are calibrated on 1,000 of the queries as ``skyrank.mining.mine`` does
(included in the build time). For every index kind the script measures build time, search time for all queries
at k = 20, the peak resident-memory increase during build + search, and recall@20 against the exact results (set
overlap over all queries; plus :func:`skyrank.index.measure_recall` on its 1,000-query sample, what the dataset
card reports), and prints the ratios against exact measured in the same run.

    python benchmarks/search.py                                  # N=100,000, Q=2,000: this 2-core CPU
    python benchmarks/search.py --n 1000000 --queries 40000      # the issue 5 size (target: >= 20x at 0.99)
    python benchmarks/search.py --kinds exact,ivf --fast-build    # multi-threaded k-means / HNSW build
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

import numpy as np

from skyrank.index import build_index, measure_recall, sample_queries


def clustered_embeddings(n: int, n_queries: int, dim: int, seed: int = 0, return_sources: bool = False) -> Any:
    """``(references (n, dim), queries (n_queries, dim))``, float32, L2-normalised, from a Gaussian mixture.

    With ``return_sources``, also the index of the reference each query was drawn from (its positive)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(16, n // 100)
    centers = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    scale = np.float32(1.0 / np.sqrt(dim))
    refs = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        block = centers[rng.integers(0, n_clusters, stop - start)]
        block += scale * rng.standard_normal((stop - start, dim), dtype=np.float32)
        refs[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    sources = rng.integers(0, n, n_queries)
    queries = refs[sources] + 0.5 * scale * rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return (refs, queries, sources) if return_sources else (refs, queries)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident set size every 5 ms; ``peak_delta`` is the peak increase over the start."""

    def __init__(self) -> None:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_delta(self) -> int:
        return self.peak - self.start


def run(n: int, n_queries: int, dim: int, k: int, kinds: list[str], use_gpu: bool | None, fast_build: bool,
        seed: int, hnsw_ef_construction: int | None = None) -> None:
    import faiss

    t0 = time.perf_counter()
    refs, queries = clustered_embeddings(n, n_queries, dim, seed)
    print(f"data: {n:,} references x {dim}-d ({n // 100 if n >= 1600 else 16} Gaussian clusters), "
          f"{n_queries:,} queries, k={k}; generated in {time.perf_counter() - t0:.1f} s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
          f"build {'multi-threaded' if fast_build else 'deterministic (1 thread for k-means / HNSW graph)'}")
    sample = queries[sample_queries(n_queries, 1000)]
    results: dict[str, dict[str, Any]] = {}
    exact_idx = None
    for label in ["exact"] + [x for x in kinds if x != "exact"]:
        kind = label.split("-")[0]
        params: dict[str, Any] = {"deterministic": not fast_build}
        if label == "ivf-faiss":
            params["ivf_scan"] = "faiss"
        if kind == "hnsw" and hnsw_ef_construction is not None:
            params["ef_construction"] = hnsw_ef_construction
        with PeakRss() as mem:
            t = time.perf_counter()
            calib = queries[sample_queries(n_queries, 1000, seed=1)] if kind in ("ivf", "hnsw") else None
            index = build_index(refs, kind, use_gpu=use_gpu, params=params, calibration_queries=calib, calibration_k=k)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            _, idx = index.search(queries, k)
            search_s = time.perf_counter() - t
        if label == "exact":
            exact_idx = idx
        assert exact_idx is not None
        overlap = np.mean([np.intersect1d(a[a >= 0], b).size / k for a, b in zip(idx, exact_idx, strict=True)])
        card_recall = measure_recall(index, refs, sample, k)
        results[label] = dict(build=build_s, search=search_s, mem=mem.peak_delta, recall=float(overlap),
                             card_recall=card_recall, info=index.info)
        shown = {key: v for key, v in index.info.items()
                 if key in ("nlist", "nprobe", "nprobe_calibration", "train_size", "M", "ef_construction",
                            "ef_search", "ef_search_calibration", "on_gpu", "fallback", "ivf_scan")}
        print(f"{label:>9}: build {build_s:8.2f} s  search {search_s:8.2f} s ({n_queries / search_s:9.0f} q/s)  "
              f"peak RSS +{mem.peak_delta / 2**20:7.0f} MiB  recall@{k} {overlap:.4f} "
              f"(card sample {card_recall:.4f})  {shown}", flush=True)
        del index
    ex = results["exact"]
    print()
    for label, r in results.items():
        if label == "exact":
            continue
        total = (ex["build"] + ex["search"]) / (r["build"] + r["search"])
        print(f"{label.upper()} is {ex['search'] / r['search']:.1f}x faster than exact at recall@{k} = "
              f"{r['recall']:.4f} (search only; build + search: {total:.1f}x"
              f"; peak memory {r['mem'] / max(ex['mem'], 1):.2f}x exact's)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="references (default 100,000)")
    parser.add_argument("--queries", type=int, default=2_000, help="queries (default 2,000)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--kinds", default="exact,ivf,hnsw",
                        help="comma-separated subset of exact,ivf,ivf-faiss,hnsw (ivf-faiss: IVF with faiss's "
                             "per-query CPU scan instead of the default list-major scan)")
    parser.add_argument("--hnsw-ef-construction", type=int, default=None,
                        help="HNSW efConstruction (default: skyrank.index's 200)")
    parser.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto", help="faiss GPU for exact/ivf")
    parser.add_argument("--fast-build", action="store_true",
                        help="multi-threaded k-means and HNSW build (not deterministic across runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    use_gpu = {"auto": None, "yes": True, "no": False}[args.gpu]
    kinds = [x.strip() for x in args.kinds.split(",") if x.strip()]
    unknown = set(kinds) - {"exact", "ivf", "ivf-faiss", "hnsw"}
    if unknown:
        parser.error(f"unknown --kinds {sorted(unknown)}: choose from exact, ivf, ivf-faiss, hnsw")
    run(args.n, args.queries, args.dim, args.k, kinds, use_gpu, args.fast_build, args.seed,
        args.hnsw_ef_construction)


if __name__ == "__main__":
    main()
