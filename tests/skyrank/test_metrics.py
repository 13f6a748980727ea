from __future__ import annotations

import numpy as np
import pytest

from skyrank.format.schema import RETRIEVER_COLUMNS
from skyrank.metrics import (
    AP_DEFINITIONS,
    POSITIVE_RANKS_COLUMN,
    average_precision,
    conservative_ap,
    query_metrics,
    recall_at_k,
    rerank_positive_ranks,
    retrieval_metrics,
    summarize,
    top1_percent_k,
    topk_list_ap,
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


def test_topk_list_ap_keeps_the_earlier_trapezoid_variant() -> None:
    ranked = ["a", "b", "c", "d"]
    assert topk_list_ap(ranked, {"a"}) == 1.0
    assert topk_list_ap(ranked, {"b"}) == 0.25
    assert topk_list_ap(ranked, {"x"}) == 0.0  # no positive in the list
    assert topk_list_ap(ranked, set()) == 0.0
    assert topk_list_ap(ranked, ["a", "c"]) == pytest.approx(19 / 24)
    # positives outside the list are ignored, not counted as misses
    assert topk_list_ap(ranked, {"b", "zzz"}) == 0.25
    assert topk_list_ap(ranked, {"b", "zzz"}, definition="precision") == 0.5
    with pytest.raises(ValueError):
        topk_list_ap(["a", "a"], {"a"})


@pytest.mark.parametrize(
    ("ranks", "expected"),
    [
        ([], 0.0),
        ([1], 1.0),
        ([2], 0.5),  # 1/r
        ([10], 0.1),
        ([1, 3], (1 + 2 / 3) / 2),
        ([2, 4], (1 / 2 + 2 / 4) / 2),
        ([2, 3, 5], (1 / 2 + 2 / 3 + 3 / 5) / 3),
        ([1, 2, 3, 4], 1.0),
        # S2D-like: 3 positives, normaliser n = 3 (all of them), the far one still counts
        ([1, 2, 100], (1 + 1 + 3 / 100) / 3),
    ],
)
def test_precision_ap_hand_worked(ranks: list[int], expected: float) -> None:
    assert average_precision(ranks, definition="precision") == pytest.approx(expected, abs=1e-12)


def test_precision_ap_is_at_least_the_trapezoid_and_fits_the_papers_numbers() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        ranks = sorted(set(int(r) for r in rng.integers(1, 50, size=int(rng.integers(1, 6)))))
        assert average_precision(ranks, "precision") >= average_precision(ranks, "market1501") - 1e-12
    # the issue's cap: with R@1 92.05 / R@5 97.55 the trapezoid AP can be at most 93.63 (< Table 1's 94.49)
    cap = 92.05 + 0.25 * (97.55 - 92.05) + (100 - 97.55) / 12
    assert cap == pytest.approx(93.63, abs=0.01)
    assert average_precision([2], "market1501") == 0.25 and average_precision([2], "precision") == 0.5


def test_unknown_ap_definition_is_refused() -> None:
    assert AP_DEFINITIONS == ("market1501", "precision")
    with pytest.raises(ValueError, match="market1501"):
        average_precision([1], definition="map")


def test_conservative_ap_is_precision_ap_zeroed_without_a_topk_positive() -> None:
    assert conservative_ap([1], 10) == 1.0
    assert conservative_ap([4], 10) == 0.25  # D2S: 1/p for a positive at top-k position p
    assert conservative_ap([11], 10) == 0.0  # beyond the top-k: 0, whereas precision AP gives 1/11
    assert conservative_ap([], 10) == 0.0
    # S2D: one positive in the top-3, two beyond; the normaliser is all three positives
    assert conservative_ap([2, 5, 9], 3) == pytest.approx((1 / 2 + 2 / 5 + 3 / 9) / 3)
    assert conservative_ap([4, 5], 3) == 0.0
    with pytest.raises(ValueError):
        conservative_ap([1], 0)


def test_top1_percent_k_follows_the_evaluators_indexing() -> None:
    # evaluators print CMC[round(0.01 N)] (0-based) = Recall@(round(0.01 N) + 1)
    assert top1_percent_k(951) == 11  # University-1652 D2S: round(9.51) = 10 -> R@11
    assert top1_percent_k(250) == 3  # round(2.5) = 2 (half to even) -> R@3
    assert top1_percent_k(350) == 5  # round(3.5) = 4 -> R@5
    assert top1_percent_k(40) == 1  # round(0.4) = 0 -> R@1
    assert top1_percent_k(1) == 1
    with pytest.raises(ValueError):
        top1_percent_k(0)


def test_query_metrics_and_summarize_hand_worked() -> None:
    # positives at ranks 2 and 12 with a re-ranked top-10
    q = query_metrics([12, 2], 10, top1pct_k=3)
    assert q["R@1"] == 0.0 and q["R@5"] == 1.0 and q["R@10"] == 1.0 and q["R@top1%"] == 1.0
    # trapezoid: i=1, r=2: (0 + 1/2)/2; i=2, r=12: (1/11 + 2/12)/2; mean of the two
    assert q["AP"] == pytest.approx(((0 + 1 / 2) / 2 + (1 / 11 + 2 / 12) / 2) / 2)
    assert q["AP_precision"] == pytest.approx((1 / 2 + 2 / 12) / 2)
    assert q["AP_conservative"] == q["AP_precision"]
    assert q["AP_topk_market1501"] == 0.25  # only the rank-2 positive is in the list
    far = query_metrics([11], 10)
    assert "R@top1%" not in far and far["AP_conservative"] == 0.0 and far["AP_precision"] == pytest.approx(1 / 11)
    table = summarize([q, {**q, "R@1": 1.0}])
    assert list(table) == list(q) and table["R@1"] == 50.0 and table["R@5"] == 100.0
    with pytest.raises(ValueError):
        summarize([])


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
    assert list(got) == ["R@1", "R@5", "R@10", "AP", "AP_precision"]
    assert got["R@1"] == pytest.approx(25.0)
    assert got["R@5"] == pytest.approx(50.0)
    assert got["R@10"] == pytest.approx(50.0)
    ap = (1.0 + 1 / 6 + 0.0 + average_precision([12, 20])) / 4
    assert got["AP"] == pytest.approx(100.0 * ap)
    ap_p = (1.0 + 1 / 3 + 0.0 + (1 / 12 + 2 / 20) / 2) / 4
    assert got["AP_precision"] == pytest.approx(100.0 * ap_p)
    assert retrieval_metrics(rows, ks=(20,)) == pytest.approx(
        {"R@20": 75.0, "AP": 100.0 * ap, "AP_precision": 100 * ap_p}
    )
    # R@top1% over a gallery of 250: K = 3 -> ranks 1 and 3 count
    assert retrieval_metrics(rows, gallery_size=250)["R@top1%"] == pytest.approx(50.0)
    with pytest.raises(ValueError):
        retrieval_metrics([])


def test_positive_ranks_column_is_the_schemas():
    """skyrank.metrics names the column without importing the schema (issue 22: `import skyrank.build` stays light)."""
    from skyrank.format.schema import RETRIEVER_COLUMNS
    from skyrank.metrics import POSITIVE_RANKS_COLUMN

    assert POSITIVE_RANKS_COLUMN in RETRIEVER_COLUMNS
