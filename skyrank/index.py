"""Nearest-neighbour indexes for the retrieval of SkyLink Eq. 1 (arXiv 2603.08063): exact, IVF and HNSW.

Eq. 1 scores a reference r for a query q by the inner product <E_q(q), E_r(r)> of L2-normalised embeddings
(cosine similarity) and keeps the top-m. The paper (and SkyRank's default) searches exactly; galleries of
millions of tiles (a global satellite map) can use an approximate faiss index instead. One function builds
any of them, :func:`build_index`, and :func:`measure_recall` measures how close an approximate index comes to
exact search, for the dataset card.

Kinds and parameter rules (N = gallery size; every value can be overridden with ``params``):

* ``exact``: faiss ``IndexFlatIP``, on the GPU when faiss has GPU support and sees a CUDA device. Ties are
  ordered by ascending gallery index (:func:`search_topk`'s rule).
* ``ivf``: faiss ``IndexIVFFlat`` with ``METRIC_INNER_PRODUCT`` over a flat inner-product coarse quantizer.
  ``nlist = min(round(4 * sqrt(N)), N // 39)`` (4 sqrt(N) is faiss's usual rule; faiss wants at least 39
  training points per list): 1,265 lists at N = 100,000, 4,000 at N = 1,000,000.
  k-means is trained on a deterministic sample of ``min(N, 64 * nlist)`` references (numpy
  ``default_rng(seed)``, indices sorted) with faiss's clustering seed set to ``seed`` (default 0), 10 iterations.
  ``nprobe`` (unless given): with ``calibration_queries`` (what :func:`skyrank.mining.mine` passes: a
  deterministic sample of up to 1,000 of its queries), the smallest of ``s, 2s, 4s, ..., nlist`` with
  ``s = max(1, ceil(nlist / 1024))`` whose recall@k against exact search on those queries reaches
  ``target_recall`` (0.99); the tried values and recalls are in ``info["nprobe_calibration"]``. Without
  calibration queries, ``min(nlist, max(16, ceil(nlist / 32)))``: 40 of 1,265 lists at N = 100,000, 125 of
  4,000 at N = 1,000,000 (about 3% of the lists). Recall depends on the data, so :func:`measure_recall` is
  reported with the index.
  On the CPU the search is *list-major* by default (``params["ivf_scan"] = "list_major"``, see
  :class:`_ListMajorIVF`): each inverted list is scored against all the queries of a batch that probe it with
  one BLAS matrix product, instead of faiss's per-query scan (``"faiss"``); same lists, same neighbours, several
  times faster when many queries are searched at once (``benchmarks/search.py``). On the GPU, faiss's GPU IVF
  index searches (``info["ivf_scan"] == "gpu"``).
* ``hnsw``: faiss ``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``, ``M = 32``, ``efConstruction = 200``,
  ``efSearch = max(ef, 2 * k)`` at each search (so it always exceeds k). ``ef`` (unless ``params["ef_search"]``
  is given) is calibrated like IVF's nprobe when there are ``calibration_queries``: the smallest of
  ``max(128, 2k), 2x, 4x, ...`` up to ``ef_search_max`` (2,048) whose recall@k reaches ``target_recall``
  (tried values in ``info["ef_search_calibration"]``; the last is kept even if it falls short, and the card
  reports the measured recall); 128 without calibration queries. HNSW has no faiss GPU
  implementation, so it always runs on the CPU (``info["on_gpu"]`` is False; ``use_gpu=True`` is refused).
* Tiny galleries (N < ``min_size``, default 5,000): ``ivf``/``hnsw`` fall back to exact search, which is then
  cheaper than building the index; ``info["kind"] == "exact"`` and ``info["fallback"]`` says why.

Determinism: the training sample and the k-means seed are fixed. k-means assigns points with BLAS matrix
products whose rounding may depend on the thread count, so by default the IVF index is *trained* with one
OpenMP thread (``params["deterministic"] = True``); adding and searching are exact within the probed lists,
hence deterministic. The HNSW graph depends on the order in which threads insert points, so by default it is
*built* with one thread too (slow for millions of points: pass ``params={"deterministic": False}`` to use all
threads, at the price of run-to-run differences in the returned neighbours). With the defaults, results are
identical across runs and thread counts on the same machine and faiss version (tested in
``tests/skyrank/test_index.py``); GPU and CPU indexes are not guaranteed to agree bit for bit.

``use_gpu``: None uses a GPU for ``exact``/``ivf`` when faiss has GPU support and sees a CUDA device; True
requires one (raises :class:`~skyrank.errors.MissingDependencyError`, suggesting ``pip install
'skyrank[gpu]'``); False stays on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from skyrank.errors import MissingDependencyError
from skyrank.format.rules import as_matrix as _as_matrix
from skyrank.format.rules import check_pair

KINDS = ("exact", "ivf", "hnsw")

#: Default parameters; ``build_index(..., params=...)`` overrides any of them.
DEFAULT_PARAMS: dict[str, Any] = {
    "min_size": 5_000,  # below this many references ivf/hnsw fall back to exact search
    "seed": 0,  # training sample and k-means seed (ivf)
    "train_points_per_list": 64,  # k-means training sample = min(N, 64 * nlist) (ivf)
    "kmeans_iterations": 10,  # (ivf)
    "nlist": None,  # None: min(round(4 sqrt(N)), N // 39) (ivf)
    "nprobe": None,  # None: calibrated on calibration_queries, else min(nlist, max(16, ceil(nlist / 32))) (ivf)
    "target_recall": 0.99,  # nprobe calibration target, recall@calibration_k (ivf)
    "M": 32,  # graph degree (hnsw)
    "ef_construction": 200,  # (hnsw)
    "ef_search": 128,  # efSearch = max(ef_search, 2k) at each search; the calibration's start (hnsw)
    "ef_search_max": 2048,  # efSearch calibration stops here (hnsw)
    "deterministic": True,  # train k-means / build the HNSW graph with one thread
    "batch_size": 8192,  # queries per faiss call
    "ivf_scan": "list_major",  # CPU IVF search: "list_major" (one matrix product per list) or "faiss"
}

#: CPU IVF scan strategies (``params["ivf_scan"]``).
IVF_SCANS = ("list_major", "faiss")

#: List-major IVF search: at most this many (query, probe, k) candidate slots per batch of queries.
_LIST_MAJOR_SLOTS = 1 << 24

#: faiss GPU indexes cannot return more than this many neighbours per query.
_GPU_MAX_K = 2048
#: Extra neighbours fetched beyond k by exact search, so boundary ties rarely force a second search.
_MARGIN = 8

#: faiss GPU IVF indexes accept at most this many probes.
_GPU_MAX_NPROBE = 2048


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise MissingDependencyError(
            "faiss is not installed: pip install faiss-cpu (or pip install 'skyrank[gpu]' for faiss-gpu)"
        ) from exc
    return faiss


def _resolve_gpu(faiss: Any, use_gpu: bool | None) -> bool:
    if use_gpu is False:
        return False
    has_gpu_build = hasattr(faiss, "StandardGpuResources")
    usable = has_gpu_build and faiss.get_num_gpus() > 0
    if use_gpu is True and not usable:
        if not has_gpu_build:
            raise MissingDependencyError(
                "use_gpu=True but the installed faiss has no GPU support: pip install 'skyrank[gpu]'"
            )
        raise MissingDependencyError("use_gpu=True but faiss sees no CUDA device")
    return usable


class _FlatIP:
    """Exact inner-product index (faiss IndexFlatIP, on the GPU when requested and possible)."""

    def __init__(self, ref: np.ndarray, use_gpu: bool | None) -> None:
        faiss = _import_faiss()
        self.ntotal = ref.shape[0]
        self.cpu = faiss.IndexFlatIP(ref.shape[1])
        self.cpu.add(ref)
        self.gpu = None
        if _resolve_gpu(faiss, use_gpu):
            self._resources = faiss.StandardGpuResources()
            self.gpu = faiss.index_cpu_to_gpu(self._resources, 0, self.cpu)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.gpu if self.gpu is not None and k <= _GPU_MAX_K else self.cpu
        scores, idx = index.search(np.ascontiguousarray(q), int(k))
        return scores.astype(np.float32, copy=False), idx.astype(np.int64, copy=False)


def _sort_rows(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (-score, index)."""
    order = np.lexsort((idx, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=-1), np.take_along_axis(idx, order, axis=-1)


def _search_deterministic(index: _FlatIP, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of ``q`` as the first k of (-score, gallery index), boundary ties included."""
    n = index.ntotal
    fetch = min(n, k + max(_MARGIN, k // 4))
    out_s = np.empty((q.shape[0], k), dtype=np.float32)
    out_i = np.empty((q.shape[0], k), dtype=np.int64)
    rows = np.arange(q.shape[0])
    while rows.size:
        s, i = _sort_rows(*index.search(q[rows], fetch))
        # A row is settled when the whole tie group of its k-th score lies inside what was fetched.
        settled = np.ones(rows.size, dtype=bool) if fetch >= n else s[:, k - 1] > s[:, fetch - 1]
        out_s[rows[settled]] = s[settled, :k]
        out_i[rows[settled]] = i[settled, :k]
        rows = rows[~settled]
        fetch = min(n, 2 * fetch)
    return out_s, out_i


def search_topk(
    query_emb: np.ndarray,
    ref_emb: np.ndarray,
    k: int,
    *,
    use_gpu: bool | None = None,
    batch_size: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search (SkyLink Eq. 1) with faiss ``IndexFlatIP``.

    Returns ``(scores float32 (Q, k), indices int64 (Q, k))``, each row sorted by descending score; equal
    scores are ordered by ascending gallery index, and the k returned are the first k of the whole gallery in
    that order (ties across the k boundary included: more neighbours are fetched until the tie group fits).
    ``use_gpu``: None uses a GPU when faiss has GPU support and sees a CUDA device; True requires it (raises
    :class:`~skyrank.errors.MissingDependencyError` otherwise); False stays on the CPU. Queries are searched in
    batches of ``batch_size`` rows.
    """
    q, r = check_pair(query_emb, ref_emb)
    if not 1 <= k <= r.shape[0]:
        raise ValueError(f"k must be between 1 and the gallery size {r.shape[0]}, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = _FlatIP(r, use_gpu)
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], batch_size):
        stop = min(start + batch_size, q.shape[0])
        scores[start:stop], indices[start:stop] = _search_deterministic(index, q[start:stop], k)
    return scores, indices


def default_nlist(n: int) -> int:
    """Number of IVF lists for ``n`` references: ``min(round(4 sqrt(n)), n // 39)``, at least 1."""
    return max(1, min(round(4.0 * math.sqrt(n)), n // 39))


def default_nprobe(nlist: int) -> int:
    """IVF lists probed per query without calibration: ``min(nlist, max(16, ceil(nlist / 32)))``."""
    return min(nlist, max(16, math.ceil(nlist / 32)))


def _recall(ref: np.ndarray, q: np.ndarray, idx: np.ndarray, k: int) -> float:
    """Tie-robust recall@k of the results ``idx`` (see :func:`measure_recall`).

    The k-th best score and the returned references' scores come from the same float32 matmul rows, so a
    reference at the k boundary is never lost to a rounding difference between two ways of computing it.
    """
    hits = 0
    rows = max(1, (1 << 25) // ref.shape[0])
    for start in range(0, q.shape[0], rows):
        scores = q[start : start + rows] @ ref.T
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        for j, row in enumerate(scores):
            found = idx[start + j]
            hits += min(k, int(np.count_nonzero(row[found[found >= 0]] >= kth[j])))
    return hits / (k * q.shape[0])


@contextmanager
def _omp_threads(n: int | None) -> Iterator[None]:
    """Temporarily set faiss's OpenMP thread count (no-op for None)."""
    if n is None:
        yield
        return
    faiss = _import_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class _ListMajorIVF:
    """The CPU search of a faiss ``IndexIVFFlat``, one inverted list at a time (``params["ivf_scan"]``).

    faiss's CPU ``IndexIVFFlat`` scans each query's nprobe lists vector by vector, so every query streams about
    nprobe / nlist of the gallery from memory and the search is bound by memory bandwidth. A SkyRank build
    searches all its queries at once, and with thousands of queries per batch each list is probed by many of
    them, so this turns the loop around: faiss's coarse quantizer assigns the batch's queries to their nprobe
    nearest lists, then each list's vectors are read once and scored against every query that probes it with
    one BLAS matrix product, keeping each (query, list)'s top-k; a query's result is the top-k of its nprobe
    partial lists. Same lists, same float32 inner products (summed in BLAS's order rather than faiss's), so the
    same neighbours as ``IndexIVFFlat`` at the same nprobe, up to float32 rounding at ties.

    The vectors are numpy views of the faiss index's own inverted lists (no copy): the index must outlive this
    object (:class:`SearchIndex` holds both).
    """

    def __init__(self, ivf: Any) -> None:
        faiss = _import_faiss()
        invlists = ivf.invlists
        self.quantizer = ivf.quantizer
        self.dim = int(ivf.d)
        self.vectors: list[np.ndarray | None] = []
        self.ids: list[np.ndarray | None] = []
        for lst in range(int(ivf.nlist)):
            n = int(invlists.list_size(lst))
            if n == 0:
                self.vectors.append(None)
                self.ids.append(None)
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * int(ivf.code_size))
            self.vectors.append(codes.view(np.float32).reshape(n, self.dim))
            self.ids.append(np.array(faiss.rev_swig_ptr(invlists.get_ids(lst), n), dtype=np.int64))

    def batch_size(self, nprobe: int, k: int) -> int:
        """Queries per batch: as many as keep the (query, probe, k) candidate buffers within bounds."""
        return max(1, min(65_536, _LIST_MAJOR_SLOTS // (nprobe * k)))

    def search(self, q: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Unsorted top-``k`` ``(scores, ids)`` of each query over its ``nprobe`` lists (-inf / -1 when short)."""
        _, lists = self.quantizer.search(q, nprobe)
        width = nprobe * k
        best_s = np.full((q.shape[0], width), -np.inf, dtype=np.float32)
        best_i = np.full((q.shape[0], width), -1, dtype=np.int64)
        flat = lists.ravel()
        order = np.argsort(flat, kind="stable")  # (query, probe) pairs grouped by list
        grouped = flat[order]
        cuts = np.flatnonzero(np.diff(grouped)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, flat.size], strict=True):
            lst = int(grouped[a])
            vectors = self.vectors[lst] if lst >= 0 else None
            if vectors is None:  # an empty list, or fewer centroids than nprobe (-1)
                continue
            ids = self.ids[lst]
            assert ids is not None
            pairs = order[a:b]
            rows = pairs // nprobe
            scores = q[rows] @ vectors.T
            n = scores.shape[1]
            if n > k:
                top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
                scores = np.take_along_axis(scores, top, axis=1)
                found = ids[top]
            else:
                found = np.broadcast_to(ids, scores.shape)
            cols = (pairs % nprobe)[:, None] * k + np.arange(scores.shape[1])
            best_s[rows[:, None], cols] = scores
            best_i[rows[:, None], cols] = found
        if width > k:
            top = np.argpartition(best_s, width - k, axis=1)[:, width - k :]
            best_s = np.take_along_axis(best_s, top, axis=1)
            best_i = np.take_along_axis(best_i, top, axis=1)
        return best_s, best_i


class SearchIndex:
    """A built index over ``ntotal`` references; :meth:`search` returns the top-k by inner product (Eq. 1).

    ``kind`` is the kind actually built (``"exact"`` after a tiny-gallery fallback); ``info`` a plain dict of
    the parameters, suitable for the dataset card: ``kind``, ``requested_kind``, ``ntotal``, ``dim``,
    ``on_gpu``, ``fallback`` (None or the reason), and per kind ``nlist``/``nprobe``/``train_size``/``seed``
    (ivf) or ``M``/``ef_construction``/``ef_search`` (hnsw), plus ``build_seconds``.
    """

    def __init__(self, kind: str, info: dict[str, Any], *, flat: _FlatIP | None = None, cpu: Any = None,
                 gpu: Any = None, resources: Any = None, batch_size: int = 8192,
                 list_major: _ListMajorIVF | None = None) -> None:
        self.kind = kind
        self.info = info
        self.ntotal = int(info["ntotal"])
        self.dim = int(info["dim"])
        self._flat = flat
        self._cpu = cpu
        self._gpu = gpu
        self._resources = resources  # keeps the GPU memory alive as long as the index
        self._batch_size = batch_size
        self._list_major = list_major

    @property
    def is_exact(self) -> bool:
        """True when searches are exact (kind ``exact``, including the tiny-gallery fallback)."""
        return self.kind == "exact"

    def _search_batch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is not None:
            return _search_deterministic(self._flat, q, k)
        q = np.ascontiguousarray(q)
        if self.kind == "hnsw":
            self._cpu.hnsw.efSearch = max(int(self.info["ef_search"]), 2 * k)
            scores, idx = self._cpu.search(q, int(k))
        elif self._use_list_major(k):
            assert self._list_major is not None
            scores, idx = self._list_major.search(q, int(k), int(self._cpu.nprobe))
        else:
            index = self._gpu if self._gpu is not None and k <= _GPU_MAX_K else self._cpu
            scores, idx = index.search(q, int(k))
        scores = scores.astype(np.float32, copy=False)
        idx = idx.astype(np.int64, copy=False)
        # Deterministic order: (-score, gallery index), missing results (-1) last.
        missing = idx < 0
        key = np.where(missing, np.float32(np.inf), -scores)
        order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, idx), key), axis=-1)
        scores = np.take_along_axis(scores, order, axis=-1)
        idx = np.take_along_axis(idx, order, axis=-1)
        scores[idx < 0] = -np.inf
        return scores, idx

    def _use_list_major(self, k: int) -> bool:
        """IVF on the CPU with the list-major scan (the GPU index serves every k it supports)."""
        return self._list_major is not None and (self._gpu is None or k > _GPU_MAX_K)

    def search(self, query_emb: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` references of each query: ``(scores float32 (Q, k), indices int64 (Q, k))``.

        Rows are sorted by descending score, ties by ascending gallery index. Exact indexes return the first k
        of the gallery in that order. Approximate indexes return their own top-k; a slot they could not fill
        (an IVF query whose probed lists hold fewer than k references) has index -1 and score -inf, at the end.
        """
        q = _as_matrix(query_emb, "query_emb")
        if q.shape[1] != self.dim:
            raise ValueError(f"query_emb has dimension {q.shape[1]} but the index has {self.dim}")
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be between 1 and the gallery size {self.ntotal}, got {k}")
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        batch = self._batch_size
        if self._use_list_major(k):
            assert self._list_major is not None
            batch = max(batch, self._list_major.batch_size(int(self._cpu.nprobe), k))
        for start in range(0, q.shape[0], batch):
            stop = min(start + batch, q.shape[0])
            scores[start:stop], idx[start:stop] = self._search_batch(q[start:stop], k)
        return scores, idx

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.info.items())
        return f"SearchIndex({shown})"


def _merge_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_PARAMS)
    for key, value in (params or {}).items():
        if key not in DEFAULT_PARAMS:
            raise ValueError(f"unknown index parameter {key!r}; known: {sorted(DEFAULT_PARAMS)}")
        merged[key] = value
    return merged


def build_index(
    ref_emb: Any,
    kind: str = "exact",
    *,
    use_gpu: bool | None = None,
    params: Mapping[str, Any] | None = None,
    calibration_queries: Any = None,
    calibration_k: int = 20,
) -> SearchIndex:
    """Build a ``kind`` index (``exact``, ``ivf`` or ``hnsw``) over the L2-normalised references ``ref_emb``.

    Parameters follow the rules of the module docstring, chosen from the gallery size N; ``params`` overrides
    any key of :data:`DEFAULT_PARAMS`. ``calibration_queries`` tune IVF's nprobe (unless ``params["nprobe"]`` is
    set) or HNSW's efSearch (unless ``params["ef_search"]`` is set) for recall@``calibration_k`` >=
    ``params["target_recall"]``. Galleries smaller than
    ``params["min_size"]`` get an exact index for ``ivf``/``hnsw`` (``info["fallback"]`` says so). Raises
    ``ValueError`` on an unknown kind or parameter and :class:`~skyrank.errors.MissingDependencyError` for
    ``use_gpu=True`` without a usable GPU (or with ``hnsw``, which faiss only implements on the CPU).
    """
    import time

    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    p = _merge_params(params)
    if p["ivf_scan"] not in IVF_SCANS:
        raise ValueError(f"unknown ivf_scan {p['ivf_scan']!r}; choose one of {', '.join(IVF_SCANS)}")
    ref = _as_matrix(ref_emb, "ref_emb")
    n, dim = ref.shape
    faiss = _import_faiss()
    if kind == "hnsw" and use_gpu:
        _resolve_gpu(faiss, True)  # a missing GPU build is reported first, with the install hint
        raise MissingDependencyError("use_gpu=True but faiss has no GPU HNSW index: use --index ivf or exact")
    on_gpu = kind != "hnsw" and _resolve_gpu(faiss, use_gpu)
    info: dict[str, Any] = {"kind": kind, "requested_kind": kind, "ntotal": n, "dim": dim, "on_gpu": on_gpu,
                            "fallback": None}
    start = time.perf_counter()
    batch = int(p["batch_size"])
    if kind != "exact" and n < int(p["min_size"]):
        info["kind"] = "exact"
        info["fallback"] = (f"gallery of {n} references < min_size {p['min_size']}: exact search is used "
                            f"instead of {kind}")
        kind = "exact"
    if kind == "exact":
        flat = _FlatIP(ref, on_gpu)
        info["build_seconds"] = round(time.perf_counter() - start, 3)
        return SearchIndex("exact", info, flat=flat, batch_size=batch)

    threads = 1 if p["deterministic"] else None
    if kind == "ivf":
        nlist = int(p["nlist"] or default_nlist(n))
        calibrate = calibration_queries is not None and not p["nprobe"]
        nprobe = min(nlist, int(p["nprobe"] or default_nprobe(nlist)))
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be between 1 and the gallery size {n}, got {nlist}")
        train_size = min(n, int(p["train_points_per_list"]) * nlist)
        rng = np.random.default_rng(int(p["seed"]))
        sample = np.sort(rng.choice(n, size=train_size, replace=False)) if train_size < n else np.arange(n)
        quantizer = faiss.IndexFlatIP(dim)
        cpu = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        cpu.cp.seed = int(p["seed"])
        cpu.cp.niter = int(p["kmeans_iterations"])
        cpu.cp.max_points_per_centroid = max(256, int(p["train_points_per_list"]))
        cpu.cp.verbose = False
        with _omp_threads(threads):
            cpu.train(ref[sample])
        cpu.add(ref)
        cpu.nprobe = nprobe
        list_major = _ListMajorIVF(cpu) if p["ivf_scan"] == "list_major" else None
        calibration: list[tuple[int, float]] = []
        if calibrate:
            cq = _as_matrix(calibration_queries, "calibration_queries")
            ck = min(int(calibration_k), n)
            nprobe = min(nlist, max(1, math.ceil(nlist / 1024)))
            while True:
                cpu.nprobe = nprobe
                _, found = list_major.search(cq, ck, nprobe) if list_major is not None else cpu.search(cq, ck)
                calibration.append((nprobe, round(_recall(ref, cq, found, ck), 5)))
                if calibration[-1][1] >= float(p["target_recall"]) or nprobe == nlist:
                    break
                nprobe = min(nlist, 2 * nprobe)
            info["nprobe_calibration"] = calibration
        gpu = resources = None
        if on_gpu and nprobe <= _GPU_MAX_NPROBE:
            resources = faiss.StandardGpuResources()
            gpu = faiss.index_cpu_to_gpu(resources, 0, cpu)
            gpu.nprobe = nprobe
        info.update(nlist=nlist, nprobe=nprobe, train_size=train_size, seed=int(p["seed"]),
                    kmeans_iterations=int(p["kmeans_iterations"]), on_gpu=gpu is not None,
                    ivf_scan="gpu" if gpu is not None else p["ivf_scan"])
        info["build_seconds"] = round(time.perf_counter() - start, 3)
        return SearchIndex("ivf", info, cpu=cpu, gpu=gpu, resources=resources, batch_size=batch,
                           list_major=list_major)

    cpu = faiss.IndexHNSWFlat(dim, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
    cpu.hnsw.efConstruction = int(p["ef_construction"])
    with _omp_threads(threads):
        cpu.add(ref)
    ef_search = int(p["ef_search"])
    if calibration_queries is not None and "ef_search" not in (params or {}):
        cq = _as_matrix(calibration_queries, "calibration_queries")
        ck = min(int(calibration_k), n)
        ef_search = max(ef_search, 2 * ck)
        tried: list[tuple[int, float]] = []
        while True:
            cpu.hnsw.efSearch = ef_search
            _, found = cpu.search(cq, ck)
            tried.append((ef_search, round(_recall(ref, cq, found, ck), 5)))
            if tried[-1][1] >= float(p["target_recall"]) or 2 * ef_search > int(p["ef_search_max"]):
                break
            ef_search *= 2
        info["ef_search_calibration"] = tried
    info.update(M=int(p["M"]), ef_construction=int(p["ef_construction"]), ef_search=ef_search)
    info["build_seconds"] = round(time.perf_counter() - start, 3)
    return SearchIndex("hnsw", info, cpu=cpu, batch_size=batch)


def sample_queries(n_queries: int, size: int = 1000, seed: int = 0) -> np.ndarray:
    """A deterministic sample of ``min(size, n_queries)`` query positions (sorted), for :func:`measure_recall`."""
    if n_queries <= size:
        return np.arange(n_queries)
    return np.sort(np.random.default_rng(seed).choice(n_queries, size=size, replace=False))


def measure_recall(index: SearchIndex, exact_ref: Any, query_sample: Any, k: int) -> float:
    """Recall@k of ``index`` against exact search over ``exact_ref`` on the queries ``query_sample``.

    For each query, the share of the index's k results that belong to the exact top-k, counted tie-robustly:
    a returned reference counts when its exact float32 score is at least the exact k-th best score (so equal
    scores at the k boundary never count as misses). Averaged over the queries; 1.0 for an exact index. Pass a
    deterministic sample (:func:`sample_queries`, e.g. 1,000 queries): exact search costs O(len(sample) * N).
    """
    q = _as_matrix(query_sample, "query_sample")
    ref = _as_matrix(exact_ref, "exact_ref")
    if ref.shape[0] != index.ntotal or ref.shape[1] != index.dim:
        raise ValueError(f"exact_ref has shape {ref.shape} but the index holds {index.ntotal} x {index.dim}")
    if not 1 <= k <= index.ntotal:
        raise ValueError(f"k must be between 1 and the gallery size {index.ntotal}, got {k}")
    if index.is_exact:
        return 1.0
    _, approx_idx = index.search(q, k)
    return _recall(ref, q, approx_idx, k)
