from __future__ import annotations

import numpy as np
import pytest

from skyrank.format.schema import RETRIEVER_COLUMNS
from skyrank.metrics import (
    POSITIVE_RANKS_COLUMN,
    average_precision,
    conservative_ap,
    recall_at_k,
    rerank_positive_ranks,
    retrieval_metrics,
)


def _reference_compute_map(index: np.ndarray, good_index: np.ndarray) -> float:
    """A literal port of the Market-1501 / University-1652 ``compute_mAP`` (np.in1d -> np.isin), no junk."""
    ap = 0.0
    if good_index.size == 0:
        return ap
    ngood = len(good_index)
    mask = np.isin(index, good_index)
    rows_good = np.argwhere(mask).flatten()
    for i in range(ngood):
        d_recall = 1.0 / ngood
        precision = (i + 1) * 1.0 / (rows_good[i] + 1)
        old_precision = i * 1.0 / rows_good[i] if rows_good[i] != 0 else 1.0
        ap = ap + d_recall * (old_precision + precision) / 2
    return ap


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        ([], 0.0),
        ([1], 1.0),
        ([2], 0.25),  # 1/(2r), not 1/r
        ([3], 1 / 6),
        ([10], 1 / 20),
        ([1, 2], 1.0),
        # i=1: (1+1)/2 = 1; i=2: precision 2/3, old 1/2 -> 7/12; mean 19/24
        ([1, 3], 19 / 24),
        ([3, 1], 19 / 24),  # order of the input does not matter
        # i=1: (0 + 1/2)/2 = 1/4; i=2: precision 1/2, old 1/3 -> 5/12; mean 1/3
        ([2, 4], 1 / 3),
        # 1/4 + 7/12 + (1/2 + 3/5)/2 = 83/60; mean 83/180
        ([2, 3, 5], 83 / 180),
        ([1, 2, 3, 4], 1.0),
    ],
)
def test_average_precision_hand_worked(ranks: list[int], expected: float) -> None:
    assert average_precision(ranks) == pytest.approx(expected, abs=1e-12)


def test_average_precision_matches_reference_compute_map() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_gallery = int(rng.integers(1, 60))
        ranking = rng.permutation(n_gallery)
        good = rng.choice(n_gallery, size=int(rng.integers(0, min(n_gallery, 8) + 1)), replace=False)
        ranks = [int(np.flatnonzero(ranking == g)[0]) + 1 for g in good]
        assert average_precision(ranks) == pytest.approx(_reference_compute_map(ranking, good), abs=1e-12)


def test_average_precision_accepts_numpy_ints() -> None:
    assert average_precision(np.array([2], dtype=np.int32)) == 0.25


@pytest.mark.parametrize("bad", [[0], [-1], [2, 2], [1.5], [True]])
def test_average_precision_rejects_bad_ranks(bad: list) -> None:
    with pytest.raises(ValueError):
        average_precision(bad)


def test_recall_at_k() -> None:
    assert recall_at_k([3, 7], 3) == 1.0
    assert recall_at_k([3, 7], 2) == 0.0
    assert recall_at_k([7, 3], 5) == 1.0
    assert recall_at_k([], 10) == 0.0
    with pytest.raises(ValueError):
        recall_at_k([1], 0)


def test_conservative_ap() -> None:
    ranked = ["a", "b", "c", "d"]
    assert conservative_ap(ranked, {"a"}) == 1.0
    assert conservative_ap(ranked, {"b"}) == 0.25
    assert conservative_ap(ranked, {"x"}) == 0.0  # no positive in the list
    assert conservative_ap(ranked, set()) == 0.0
    assert conservative_ap(ranked, ["a", "c"]) == pytest.approx(19 / 24)
    # positives outside the list are ignored, not counted as misses
    assert conservative_ap(ranked, {"b", "zzz"}) == 0.25
    with pytest.raises(ValueError):
        conservative_ap(["a", "a"], {"a"})


def test_rerank_positive_ranks() -> None:
    topk = [f"g{i}" for i in range(10)]  # original top-10: g0..g9 at ranks 1..10
    reranked = ["g4", *[g for g in topk if g != "g4"]]
    # g4 (rank 5) moves to 1; p_far (rank 15) stays
    assert rerank_positive_ranks(reranked, ["g4", "p_far"], [5, 15], 10) == [1, 15]
    # g0 (rank 1) pushed to 2 by g4
    assert rerank_positive_ranks(reranked, ["g0", "g4"], [1, 5], 10) == [2, 1]
    assert rerank_positive_ranks(topk, [], [], 10) == []
    with pytest.raises(ValueError, match="missing"):
        rerank_positive_ranks(topk, ["zz"], [3], 10)
    with pytest.raises(ValueError, match="appears"):
        rerank_positive_ranks(topk, ["g1"], [12], 10)
    with pytest.raises(ValueError, match="exactly"):
        rerank_positive_ranks(topk[:5], ["g1"], [2], 10)
    with pytest.raises(ValueError):
        rerank_positive_ranks(topk, ["g1", "g2"], [2], 10)


def test_rerank_then_average_precision() -> None:
    topk = ["n1", "p", "n2"]
    new = rerank_positive_ranks(["p", "n1", "n2"], ["p", "q"], [2, 4], 3)
    assert new == [1, 4]
    assert average_precision(new) == pytest.approx((1.0 + (1 / 3 + 2 / 4) / 2) / 2)
    assert rerank_positive_ranks(topk, ["p"], [2], 3) == [2]


def test_retrieval_metrics_counts_queries_without_positives() -> None:
    assert POSITIVE_RANKS_COLUMN in RETRIEVER_COLUMNS
    rows = [{POSITIVE_RANKS_COLUMN: r} for r in ([1], [3], [], [12, 20])]
    got = retrieval_metrics(rows)
    assert list(got) == ["R@1", "R@5", "R@10", "AP"]
    assert got["R@1"] == pytest.approx(25.0)
    assert got["R@5"] == pytest.approx(50.0)
    assert got["R@10"] == pytest.approx(50.0)
    ap = (1.0 + 1 / 6 + 0.0 + average_precision([12, 20])) / 4
    assert got["AP"] == pytest.approx(100.0 * ap)
    assert retrieval_metrics(rows, ks=(20,)) == pytest.approx({"R@20": 75.0, "AP": 100.0 * ap})
    with pytest.raises(ValueError):
        retrieval_metrics([])
