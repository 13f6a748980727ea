from __future__ import annotations

import itertools

import numpy as np
import pytest

from skyrank import mining
from skyrank.errors import MissingDependencyError
from skyrank.format.rules import apply_swap_rule
from skyrank.format.schema import RETRIEVER_COLUMNS
from skyrank.index import search_topk
from skyrank.mining import MinedRow, full_ranks, mine


def _rows(dicts: list[dict]) -> list[MinedRow]:
    """Typed view of mined rows; MinedRow's fields are checked against schema.RETRIEVER_COLUMNS on import."""
    for d in dicts:
        assert tuple(d) == RETRIEVER_COLUMNS
    return [MinedRow(**d) for d in dicts]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_ranks(scores: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Positions in the gallery sorted by (-score, negative flag, index), by a full sort."""
    negative = np.ones(scores.size, dtype=bool)
    negative[pos] = False
    order = np.lexsort((np.arange(scores.size), negative, -scores))
    position = np.empty(scores.size, dtype=np.int64)
    position[order] = np.arange(1, scores.size + 1)
    return position[pos]


# --------------------------------------------------------------------------------------- search and ranks


def test_search_topk_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    q, r = _unit(rng.normal(size=(50, 16))), _unit(rng.normal(size=(300, 16)))
    scores, idx = search_topk(q, r, 10, batch_size=16)
    assert scores.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (50, 10)
    full = q @ r.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-5)


def test_search_topk_ties_ordered_by_gallery_index_also_at_the_boundary() -> None:
    # Every reference has the same score for the query: the top-k must be indices 0..k-1, even though the tie
    # group (100 refs) is far longer than what faiss is first asked for.
    r = np.tile(_unit(np.ones((1, 8))), (100, 1))
    q = _unit(np.ones((3, 8)))
    _, idx = search_topk(q, r, 5)
    np.testing.assert_array_equal(idx, np.tile(np.arange(5), (3, 1)))
    # A better reference at the end, then a tie group crossing the boundary.
    r2 = np.concatenate([r, _unit(np.ones((1, 8)) + np.eye(8)[:1])])
    q2 = _unit(np.ones((1, 8)) + np.eye(8)[:1])
    _, idx2 = search_topk(q2, r2, 4)
    np.testing.assert_array_equal(idx2[0], [100, 0, 1, 2])


def test_search_topk_validation_and_gpu_flag() -> None:
    r = _unit(np.ones((4, 3)))
    with pytest.raises(ValueError):
        search_topk(r, r, 5)
    with pytest.raises(ValueError):
        search_topk(r[:, :2], r, 2)
    with pytest.raises(ValueError, match="NaN"):
        search_topk(np.full((1, 3), np.nan), r, 2)
    faiss = pytest.importorskip("faiss")
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("faiss has a usable GPU here")
    with pytest.raises(MissingDependencyError, match="skyrank\\[gpu\\]|CUDA"):
        search_topk(r, r, 2, use_gpu=True)


def test_full_ranks_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    q, r = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(200, 8)))
    pos = [rng.choice(200, size=int(rng.integers(0, 30)), replace=False) for _ in range(40)]
    got = full_ranks(q, r, pos, chunk=7)
    scores = q @ r.T
    for qi in range(40):
        np.testing.assert_array_equal(got[qi], _brute_ranks(scores[qi], pos[qi]))


def test_full_ranks_tie_rule_is_optimistic() -> None:
    # References 0..3 identical (score 1 for the query), reference 4 worse.
    r = np.concatenate([np.tile([[1.0, 0.0]], (4, 1)), [[0.0, 1.0]]]).astype(np.float32)
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    # A positive tied with negatives of lower index is ranked ahead of them: 1 + #strictly higher.
    assert full_ranks(q, r, [[3]])[0].tolist() == [1]
    # Tied positives get consecutive ranks by gallery index (never duplicate ranks).
    assert full_ranks(q, r, [[3, 1]])[0].tolist() == [2, 1]
    assert full_ranks(q, r, [[4, 2]])[0].tolist() == [5, 1]
    with pytest.raises(ValueError):
        full_ranks(q, r, [[9]])
    with pytest.raises(ValueError):
        full_ranks(q, r, [[1, 1]])


def test_ranked_prefix_falls_back_when_the_pool_is_incomplete() -> None:
    rng = np.random.default_rng(3)
    row = rng.normal(size=500).astype(np.float32)
    pos = np.array([7, 300], dtype=np.int64)
    negative = np.ones(500, dtype=bool)
    negative[pos] = False
    expected = np.lexsort((np.arange(500), negative, -row))[:25]
    for pool in (np.zeros(0, dtype=np.int64), np.arange(30, dtype=np.int64), np.argsort(-row)[:40]):
        prefix, is_pos = mining._ranked_prefix(row, pool, pos, 25)
        np.testing.assert_array_equal(prefix, expected)
        np.testing.assert_array_equal(is_pos, np.isin(expected, pos))


def test_faiss_and_rank_computation_agree_5000x64() -> None:
    rng = np.random.default_rng(4)
    q, r = _unit(rng.normal(size=(64, 64))), _unit(rng.normal(size=(5000, 64)))
    k = 50
    scores, idx = search_topk(q, r, k)
    # Ranks of faiss's top-k, computed independently with numpy, are exactly 1..k.
    ranks = full_ranks(q, r, [row for row in idx])
    for row in ranks:
        np.testing.assert_array_equal(row, np.arange(1, k + 1))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ r.T, idx, axis=1), atol=1e-5)
    # mine() agrees with faiss: the top-m it stores is faiss's top-m.
    labels = [str(i) for i in range(5000)]
    qlab = [labels[int(i)] for i in idx[:, 7]]  # positive = faiss's 8th neighbour
    rows = mine([f"q{i:03d}" for i in range(64)], qlab, q, [f"r{i}" for i in range(5000)], labels, r, m=20)
    for i, row in enumerate(_rows(rows)):
        assert row.retrieved_ids == [f"r{j}" for j in idx[i, :20]]
        assert row.gt_rank == 8
        assert row.candidate_ids == [f"r{j}" for j in idx[i, :20] if j != idx[i, 7]]


# ------------------------------------------------------------------------------------------------- mine


def _toy(seed: int = 0, n_labels: int = 12, per_label: int = 3, n_queries: int = 40, extra: int = 10):
    """Gallery with ``per_label`` images per label plus ``extra`` distractors; noisy queries."""
    rng = np.random.default_rng(seed)
    centers = _unit(rng.normal(size=(n_labels + extra, 16)))
    g_lab = [f"{i:03d}" for i in range(n_labels) for _ in range(per_label)] + [f"d{i}" for i in range(extra)]
    g_emb = _unit(np.concatenate([np.repeat(centers[:n_labels], per_label, 0), centers[n_labels:]]))
    g_emb = _unit(g_emb + 0.3 * rng.normal(size=g_emb.shape))
    g_ids = [f"sat/{i:04d}.jpg" for i in range(len(g_lab))]
    q_lab_i = rng.integers(0, n_labels, n_queries)
    q_emb = _unit(centers[q_lab_i] + 0.6 * rng.normal(size=(n_queries, 16)))
    q_ids = [f"drone/{i:04d}.jpeg" for i in rng.permutation(n_queries)]  # unsorted input order
    return q_ids, [f"{i:03d}" for i in q_lab_i], q_emb, g_ids, g_lab, g_emb


@pytest.mark.parametrize("per_label", [1, 3])
def test_mine_invariants(per_label: int) -> None:
    q_ids, q_lab, q_emb, g_ids, g_lab, g_emb = _toy(per_label=per_label)
    m = 6
    rows = mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m)
    rows = _rows(rows)
    assert [r.query_id for r in rows] == sorted(q_ids)
    scores = q_emb @ g_emb.T
    g_index = {gid: i for i, gid in enumerate(g_ids)}
    q_index = {qid: i for i, qid in enumerate(q_ids)}
    gt_in_top_m = 0
    for row in rows:
        qi = q_index[row.query_id]
        positives = {g_ids[i] for i, lab in enumerate(g_lab) if lab == row.label}
        cands = row.candidate_ids
        assert len(cands) == m - 1 and len(set(cands)) == m - 1
        assert not positives & set(cands) and set(cands) <= set(g_ids)
        cs = row.candidate_scores
        assert all(cs[i] >= cs[i + 1] for i in range(len(cs) - 1))
        sims = row.candidate_gt_similarity
        assert len(sims) == m - 1 and all(-1.0 <= s <= 1.0 for s in sims)
        np.testing.assert_allclose(sims, g_emb[[g_index[c] for c in cands]] @ g_emb[g_index[row.gt_id]], atol=1e-5)
        # positives: all of them, in full-ranking order, ranks exact
        assert set(row.positive_ids) == positives
        pranks = row.positive_ranks
        assert pranks == sorted(pranks) and all(isinstance(x, int) for x in pranks)
        pos_idx = np.array([g_index[p] for p in row.positive_ids])
        np.testing.assert_array_equal(pranks, _brute_ranks(scores[qi], pos_idx))
        assert row.gt_id == row.positive_ids[0] and row.gt_rank == min(pranks)
        assert row.gt_score == pytest.approx(float(scores[qi, g_index[row.gt_id]]), abs=1e-5)
        # raw top-m
        ret = row.retrieved_ids
        assert len(ret) == m and len(row.retrieved_scores) == m
        np.testing.assert_array_equal(ret, [g_ids[i] for i in np.argsort(-scores[qi], kind="stable")[:m]])
        if row.gt_rank <= m:
            gt_in_top_m += 1
            assert row.gt_id in ret[: row.gt_rank]
            assert ret[row.gt_rank - 1] == row.gt_id
        else:
            assert row.gt_id not in ret
        # candidates are the swap rule applied to the ranking
        assert cands == apply_swap_rule(ret + [c for c in cands if c not in ret], positives, m)
        cs_expected = [float(scores[qi, g_index[c]]) for c in cands]
        np.testing.assert_allclose(cs, cs_expected, atol=1e-5)
    assert 0 < gt_in_top_m < len(rows)  # both branches of Eq. 2 were exercised


def test_mine_is_deterministic_and_plain_values() -> None:
    data = _toy(seed=7, per_label=2)
    a = mine(*data, m=5)
    b = mine(*data, m=5)
    assert a == b
    row = _rows(a)[0]
    assert isinstance(row.gt_id, str) and isinstance(row.gt_rank, int)
    assert all(type(x) is float for x in row.candidate_scores)
    assert all(np.float32(x) == x for x in row.retrieved_scores)  # float32-representable


def test_mine_ties_follow_the_optimistic_rule() -> None:
    # Gallery: g0 (negative) and g1 (positive) identical and best; g2, g3 negatives identical, next best.
    base = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    g = base.astype(np.float32)
    q = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    rows = mine(["q"], ["B"], q, ["g0", "g1", "g2", "g3", "g4"], ["A", "B", "C", "C", "D"], g, m=3)
    row = _rows(rows)[0]
    assert row.gt_id == "g1" and row.gt_rank == 1  # positive ahead of the tied negative g0
    assert row.retrieved_ids == ["g1", "g0", "g2"]
    assert row.candidate_ids == ["g0", "g2"]  # negatives tied with each other by gallery index


def test_mine_validation() -> None:
    q_ids, q_lab, q_emb, g_ids, g_lab, g_emb = _toy()
    with pytest.raises(ValueError, match="no positive"):
        mine(q_ids, ["nowhere"] * len(q_ids), q_emb, g_ids, g_lab, g_emb, m=5)
    with pytest.raises(ValueError, match="m must"):
        mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=1)
    with pytest.raises(ValueError, match="exceeds"):
        mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=len(g_ids) + 1)
    with pytest.raises(ValueError, match="negatives"):
        mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=len(g_ids))  # 3 positives: only N-3 negatives
    with pytest.raises(ValueError, match="duplicates"):
        mine([q_ids[0]] * len(q_ids), q_lab, q_emb, g_ids, g_lab, g_emb, m=5)
    with pytest.raises(ValueError):
        mine(q_ids[:-1], q_lab, q_emb, g_ids, g_lab, g_emb, m=5)
    # the largest m allowed: N - P + 1 (exactly m - 1 negatives left)
    rows = mine(q_ids[:3], q_lab[:3], q_emb[:3], g_ids, g_lab, g_emb, m=len(g_ids) - 2)
    assert all(len(r.candidate_ids) == len(g_ids) - 3 for r in _rows(rows))


# ------------------------------------------------------------------------------- mine with approximate indexes


def _check_row_invariants(row: MinedRow, m: int, scores: np.ndarray, g_index: dict[str, int]) -> None:
    """The validator's per-row invariants (skyrank.validate) plus exact scores."""
    ret, pr = row.retrieved_ids, row.positive_ranks
    assert len(ret) == m and len(set(ret)) == m and len(row.candidate_ids) == m - 1
    assert pr == sorted(pr) and len(set(pr)) == len(pr) and row.gt_rank == min(pr) and row.positive_ids[0] == row.gt_id
    assert (row.gt_rank <= m) == (row.gt_id in ret)
    for p, rank in zip(row.positive_ids, pr, strict=True):
        assert (rank <= m) == (p in ret)
        if rank <= m:
            assert ret[rank - 1] == p
    posset = set(row.positive_ids)
    assert row.candidate_ids[: m - 1] == [x for x in ret if x not in posset][: len(row.candidate_ids)] or len(
        [x for x in ret if x not in posset]
    ) < m - 1
    assert not posset & set(row.candidate_ids)
    assert all(a >= b for a, b in itertools.pairwise(row.retrieved_scores))
    assert sum(s > row.gt_score for s in row.retrieved_scores) < row.gt_rank
    np.testing.assert_allclose(row.retrieved_scores, [scores[g_index[x]] for x in ret], atol=1e-5)


_FLOAT_COLUMNS = ("gt_score", "candidate_scores", "retrieved_scores", "candidate_gt_similarity")


def _assert_rows_equal_up_to_rounding(rows: list[dict], expected: list[dict]) -> None:
    """Same ids, ranks and orders; scores equal to float32 rounding (pool-only rows use a matrix-vector product)."""
    assert len(rows) == len(expected)
    for a, b in zip(rows, expected, strict=True):
        assert {k: v for k, v in a.items() if k not in _FLOAT_COLUMNS} == {
            k: v for k, v in b.items() if k not in _FLOAT_COLUMNS
        }
        for key in _FLOAT_COLUMNS:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_mine_with_exhaustive_approximate_index_equals_exact(kind: str) -> None:
    data = _toy(seed=11, per_label=3)
    params = {"min_size": 0, "nlist": 4, "nprobe": 4} if kind == "ivf" else {"min_size": 0, "ef_search": 200}
    exact = mine(*data, m=6)
    rows, info = mine(*data, m=6, index=kind, index_params=params, return_info=True)
    _assert_rows_equal_up_to_rounding(rows, exact)
    assert info["kind"] == kind and info["recall_at_m"] == pytest.approx(1.0) and info["recall_k"] == 6


def test_mine_ivf_rows_keep_the_invariants() -> None:
    rng = np.random.default_rng(12)
    n_labels, per_label, dim = 400, 3, 16
    centers = _unit(rng.normal(size=(n_labels, dim)))
    g_lab = [f"{i:04d}" for i in range(n_labels) for _ in range(per_label)]
    g_emb = _unit(np.repeat(centers, per_label, 0) + 0.5 * rng.normal(size=(n_labels * per_label, dim)))
    g_ids = [f"sat/{i:05d}" for i in range(len(g_lab))]
    q_lab_i = rng.integers(0, n_labels, 200)
    q_emb = _unit(centers[q_lab_i] + 0.7 * rng.normal(size=(200, dim)))
    q_ids = [f"q{i:04d}" for i in range(200)]
    q_lab = [f"{i:04d}" for i in q_lab_i]
    m = 10
    rows, info = mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m, index="ivf",
                      index_params={"min_size": 0, "nlist": 64, "nprobe": 1}, return_info=True)
    assert info["kind"] == "ivf" and info["nprobe"] == 1 and 0.0 < info["recall_at_m"] < 1.0
    exact = {r["query_id"]: r for r in mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m)}
    g_index = {gid: i for i, gid in enumerate(g_ids)}
    q_index = {qid: i for i, qid in enumerate(q_ids)}
    differs = 0
    for row in _rows(rows):
        scores = q_emb[q_index[row.query_id]] @ g_emb.T
        _check_row_invariants(row, m, scores, g_index)
        ex = MinedRow(**exact[row.query_id])
        differs += row.retrieved_ids != ex.retrieved_ids
        # a retrieved positive ranks at or above its exact rank (references the index missed come after the pool)
        for p, rank in zip(row.positive_ids, row.positive_ranks, strict=True):
            assert rank <= ex.positive_ranks[ex.positive_ids.index(p)] or rank > m
    assert differs > 0  # nprobe=1 really is approximate here
    # the calibrated default reaches the target on this gallery
    rows, calibrated = mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m, index="ivf",
                            index_params={"min_size": 0, "nlist": 64}, return_info=True)
    assert calibrated["nprobe_calibration"][-1][1] >= 0.99
    for row in _rows(rows):
        _check_row_invariants(row, m, q_emb[q_index[row.query_id]] @ g_emb.T, g_index)


def test_mine_approximate_rows_scored_on_the_pool_or_the_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row whose pool holds its positives is scored on the pool alone, the others against the whole gallery;
    both keep every invariant, with scores equal to the exact ones up to float32 rounding."""
    import skyrank.mining

    paths: list[bool] = []  # per row: True = pool only, False = whole gallery
    pool_subset = skyrank.mining._pool_subset

    def spy(*args: object) -> np.ndarray | None:
        sub = pool_subset(*args)  # type: ignore[arg-type]
        paths.append(sub is not None)
        return sub

    monkeypatch.setattr(skyrank.mining, "_pool_subset", spy)
    q_ids, q_lab, q_emb, g_ids, g_lab, g_emb = _toy(seed=5, n_labels=300, per_label=1, n_queries=300, extra=1500)
    m = 10
    rows = _rows(mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m, index="ivf",
                      index_params={"min_size": 0, "nlist": 32, "nprobe": 2}))
    assert len(paths) == len(rows) and any(paths) and not all(paths)
    g_index = {gid: i for i, gid in enumerate(g_ids)}
    q_index = {qid: i for i, qid in enumerate(q_ids)}
    for row in rows:
        _check_row_invariants(row, m, q_emb[q_index[row.query_id]] @ g_emb.T, g_index)


def test_mine_approximate_index_that_misses_the_ground_truth() -> None:
    """The pool-first rule: a ground truth the index missed is ranked after the pool and is not retrieved."""
    from skyrank.index import build_index

    q_ids, q_lab, q_emb, g_ids, g_lab, g_emb = _toy(seed=13, per_label=1)
    exact_index = build_index(g_emb, "exact")
    pos_of = {lab: g_lab.index(lab) for lab in set(q_lab)}

    class MissesPositives:  # exact top list with every positive of the query removed
        kind, ntotal, dim, is_exact, info = "ivf", exact_index.ntotal, exact_index.dim, False, {"kind": "ivf"}

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            s, i = exact_index.search(q, exact_index.ntotal)
            out_i = np.full((q.shape[0], k), -1, dtype=np.int64)
            for r in range(q.shape[0]):
                lab = next(ql for ql, e in zip(q_lab, q_emb, strict=True) if np.array_equal(e, q[r]))
                keep = i[r][i[r] != pos_of[lab]][:k]
                out_i[r, : keep.size] = keep
            return s[:, :k], out_i

    m = 5
    rows = _rows(mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m, index=MissesPositives()))  # type: ignore[arg-type]
    exact = {r["query_id"]: MinedRow(**r) for r in mine(q_ids, q_lab, q_emb, g_ids, g_lab, g_emb, m=m)}
    pool_size = m + 1 + 8
    for row in rows:
        ex = exact[row.query_id]
        assert row.gt_id == ex.gt_id and row.gt_id not in row.retrieved_ids
        # ranked after the pool, at its exact rank among the references outside the pool
        assert row.gt_rank == pool_size + 1 + max(0, ex.gt_rank - 1 - pool_size)
        # the pool is the exact ranking without the ground truth: its first m-1 are the exact candidates
        assert row.candidate_ids == row.retrieved_ids[: m - 1] == ex.candidate_ids
