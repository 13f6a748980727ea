from __future__ import annotations

import numpy as np
import pytest

from skyrank.errors import MissingDependencyError
from skyrank.index import build_index, default_nlist, default_nprobe, measure_recall, sample_queries
from skyrank.mining import search_topk

faiss = pytest.importorskip("faiss")

#: Documented floor: recall@20 of the default IVF / HNSW parameters on the clustered vectors below.
RECALL_FLOOR = 0.95


def _clustered(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian mixture on the sphere (n / 100 clusters); queries are noisy references (benchmarks/search.py)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(16, n // 100), dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    noise = rng.standard_normal((n, dim)).astype(np.float32) / dim**0.5
    refs = centers[rng.integers(0, centers.shape[0], n)] + noise
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    noise = rng.standard_normal((n_queries, dim)).astype(np.float32) / dim**0.5
    queries = refs[rng.integers(0, n, n_queries)] + 0.5 * noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return refs.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def data20k() -> tuple[np.ndarray, np.ndarray]:
    return _clustered(20_000, 300, 32)


def _has_gpu() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def test_parameter_rules() -> None:
    assert default_nlist(100_000) == 1265 and default_nlist(1_000_000) == 4000
    assert default_nlist(20_000) == 20_000 // 39  # at least 39 training points per list
    assert default_nprobe(4000) == 125 and default_nprobe(100) == 16 and default_nprobe(8) == 8
    assert sample_queries(10).tolist() == list(range(10))
    s = sample_queries(5000, 1000)
    assert s.size == 1000 and np.all(np.diff(s) > 0) and np.array_equal(s, sample_queries(5000, 1000))


def test_ivf_recall_and_calibration(data20k: tuple[np.ndarray, np.ndarray]) -> None:
    refs, queries = data20k
    index = build_index(refs, "ivf", use_gpu=False)
    assert index.kind == "ivf" and index.info["nlist"] == default_nlist(20_000)
    assert index.info["nprobe"] == default_nprobe(index.info["nlist"]) and index.info["fallback"] is None
    # uncalibrated default nprobe (16 of 512 lists): 0.92 on these 32-d vectors; mine() always calibrates
    assert measure_recall(index, refs, queries, 20) >= 0.85
    calibrated = build_index(refs, "ivf", use_gpu=False, calibration_queries=queries[:150], calibration_k=20)
    tried = calibrated.info["nprobe_calibration"]
    assert tried[-1][0] == calibrated.info["nprobe"] and tried[-1][1] >= 0.99
    assert all(r < 0.99 for _, r in tried[:-1])
    assert measure_recall(calibrated, refs, queries[150:], 20) >= RECALL_FLOOR
    # searches: sorted rows, valid ids, deterministic across repeated builds
    scores, idx = calibrated.search(queries, 20)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (300, 20)
    assert np.all(np.diff(scores, axis=1) <= 0) and idx.min() >= 0
    again = build_index(refs, "ivf", use_gpu=False, calibration_queries=queries[:150], calibration_k=20)
    np.testing.assert_array_equal(again.search(queries, 20)[1], idx)
    assert again.info == {**calibrated.info, "build_seconds": again.info["build_seconds"]}


def test_ivf_is_deterministic_across_thread_counts(data20k: tuple[np.ndarray, np.ndarray]) -> None:
    refs, queries = data20k
    before = faiss.omp_get_max_threads()
    results = []
    try:
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            results.append(build_index(refs, "ivf", use_gpu=False).search(queries, 20))
    finally:
        faiss.omp_set_num_threads(before)
    np.testing.assert_array_equal(results[0][1], results[1][1])


@pytest.mark.parametrize(("nprobe", "k"), [(4, 20), (1, 40)])
def test_list_major_ivf_scan_matches_faiss(data20k: tuple[np.ndarray, np.ndarray], nprobe: int, k: int) -> None:
    refs, queries = data20k
    params = {"nprobe": nprobe, "batch_size": 64}  # several batches
    ours = build_index(refs, "ivf", use_gpu=False, params=params)
    theirs = build_index(refs, "ivf", use_gpu=False, params={**params, "ivf_scan": "faiss"})
    assert ours.info["ivf_scan"] == "list_major" and theirs.info["ivf_scan"] == "faiss"
    s_ours, i_ours = ours.search(queries, k)
    s_theirs, i_theirs = theirs.search(queries, k)
    np.testing.assert_array_equal(i_ours, i_theirs)
    np.testing.assert_allclose(s_ours, s_theirs, rtol=0, atol=1e-5)
    if nprobe == 1:  # one list of ~39 references cannot fill k = 40: missing slots are -1 / -inf, last
        short = (i_ours < 0).any(axis=1)
        assert short.any()
        assert np.all(np.isneginf(s_ours[i_ours < 0]))
        assert np.all(np.diff((i_ours < 0).astype(int), axis=1) >= 0)
    with pytest.raises(ValueError, match="unknown ivf_scan"):
        build_index(refs, "ivf", params={"ivf_scan": "gemm"})


def test_hnsw_recall_and_determinism() -> None:
    refs, queries = _clustered(5_000, 200, 16, seed=1)
    a = build_index(refs, "hnsw", use_gpu=False)
    assert a.kind == "hnsw" and a.info["M"] == 32 and a.info["ef_construction"] == 200 and not a.info["on_gpu"]
    assert measure_recall(a, refs, queries, 20) >= RECALL_FLOOR
    b = build_index(refs, "hnsw", use_gpu=False)  # one-thread build: the same graph
    np.testing.assert_array_equal(a.search(queries, 20)[1], b.search(queries, 20)[1])
    # efSearch follows k (>= 2k)
    a.search(queries[:2], 100)
    assert a._cpu.hnsw.efSearch == 200


def test_hnsw_ef_search_calibration() -> None:
    refs, queries = _clustered(5_000, 200, 16, seed=1)
    calibrated = build_index(refs, "hnsw", use_gpu=False, calibration_queries=queries[:100], calibration_k=20)
    tried = calibrated.info["ef_search_calibration"]
    assert tried[0][0] == 128 and tried[-1][0] == calibrated.info["ef_search"] and tried[-1][1] >= 0.99
    # an unreachable target: efSearch doubles up to ef_search_max and keeps the last value tried
    capped = build_index(refs, "hnsw", use_gpu=False, calibration_queries=queries[:100], calibration_k=100,
                         params={"target_recall": 1.01, "ef_search_max": 800})
    assert [ef for ef, _ in capped.info["ef_search_calibration"]] == [200, 400, 800]
    assert capped.info["ef_search"] == 800
    capped.search(queries[:2], 20)
    assert capped._cpu.hnsw.efSearch == 800
    fixed = build_index(refs, "hnsw", use_gpu=False, calibration_queries=queries[:100], params={"ef_search": 64})
    assert fixed.info["ef_search"] == 64 and "ef_search_calibration" not in fixed.info


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_tiny_gallery_falls_back_to_exact(kind: str) -> None:
    refs, queries = _clustered(1_000, 20, 8)
    index = build_index(refs, kind)
    assert index.kind == "exact" and index.is_exact and index.info["requested_kind"] == kind
    assert "exact" in index.info["fallback"] and "1000" in index.info["fallback"]
    np.testing.assert_array_equal(index.search(queries, 7)[1], search_topk(queries, refs, 7)[1])
    assert measure_recall(index, refs, queries, 7) == 1.0
    forced = build_index(refs, kind, params={"min_size": 0, "nlist": 8})
    assert forced.kind == kind and forced.info["fallback"] is None


def test_measure_recall_counts_misses() -> None:
    refs, queries = _clustered(6_000, 30, 32)
    index = build_index(refs, "ivf", params={"nprobe": 1})

    class Shifted:  # returns the exact ranks 11..30 instead of 1..20: recall 1/2
        ntotal, dim, is_exact = index.ntotal, index.dim, False

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            s, i = search_topk(q, refs, k + 10)
            return s[:, 10:], i[:, 10:]

    assert measure_recall(Shifted(), refs, queries, 20) == pytest.approx(0.5, abs=0.02)  # type: ignore[arg-type]
    assert 0.0 < measure_recall(index, refs, queries, 20) <= 1.0


def test_validation_and_gpu_errors() -> None:
    refs, _ = _clustered(100, 1, 8)
    with pytest.raises(ValueError, match="unknown index kind"):
        build_index(refs, "pq")
    with pytest.raises(ValueError, match="unknown index parameter"):
        build_index(refs, "ivf", params={"nprobes": 3})
    index = build_index(refs, "exact")
    with pytest.raises(ValueError):
        index.search(refs[:, :4], 3)
    with pytest.raises(ValueError):
        index.search(refs, 101)
    if _has_gpu():
        pytest.skip("faiss has a usable GPU here")
    for kind in ("exact", "ivf", "hnsw"):
        with pytest.raises(MissingDependencyError, match=r"skyrank\[gpu\]|CUDA"):
            build_index(refs, kind, use_gpu=True)
    assert build_index(refs, "ivf", use_gpu=None).info["on_gpu"] is False
