"""The paper's rules (skyrank.format.rules): the functions mine(), validate, SkyLink's data and evaluation call."""

from __future__ import annotations

import numpy as np
import pytest

from skyrank.format import rules
from skyrank.format.rules import (
    apply_swap_rule,
    make_labels,
    positive_ranks,
    ranking_order,
    rerank_order,
    soft_label_similarity,
    soft_labels,
    swap_rule_positions,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ Eq. 2

IDS = [f"g{i}" for i in range(30)]


@pytest.mark.parametrize("gt_pos", [0, 7, 4])  # rank 1, middle, rank m (m = 5)
def test_swap_rule_gt_in_top_m_is_dropped(gt_pos: int) -> None:
    m = 5
    gt = IDS[gt_pos]
    got = apply_swap_rule(IDS[: m + 1], {gt}, m) if gt_pos < m else apply_swap_rule(IDS[:10], {gt}, m)
    expected = [i for i in IDS[:m] if i != gt] if gt_pos < m else IDS[: m - 1]
    assert got == expected
    assert len(got) == m - 1 and gt not in got


def test_swap_rule_gt_at_rank_m_and_absent() -> None:
    m = 5
    # GT exactly at rank m: dropped, the other m-1 remain
    assert apply_swap_rule(IDS[:m], {IDS[m - 1]}, m) == IDS[: m - 1]
    # GT beyond m (or not retrieved at all): the m-th candidate is dropped
    assert apply_swap_rule(IDS[:m], {"elsewhere"}, m) == IDS[: m - 1]
    assert apply_swap_rule(IDS[:m], {IDS[20]}, m) == IDS[: m - 1]


def test_swap_rule_several_positives() -> None:
    m = 5
    positives = {IDS[0], IDS[2], IDS[3], IDS[25]}
    # three positives in the top-5: all dropped, topped up from beyond m
    got = apply_swap_rule(IDS[: m + len(positives)], positives, m)
    assert got == [IDS[1], IDS[4], IDS[5], IDS[6]]
    # only the top-m given: not enough negatives, the error says what to pass
    with pytest.raises(ValueError, match="top-9"):
        apply_swap_rule(IDS[:m], positives, m)
    # no positive in the top-m: drop the m-th
    assert apply_swap_rule(IDS[10:20], {IDS[0], IDS[1]}, m) == IDS[10:14]


def test_swap_rule_validation() -> None:
    with pytest.raises(ValueError):
        apply_swap_rule(IDS[:5], set(), 1)
    with pytest.raises(ValueError, match="top-m"):
        apply_swap_rule(IDS[:3], set(), 5)
    with pytest.raises(ValueError, match="duplicates"):
        apply_swap_rule(["a", "b", "a", "c"], set(), 3)


# ------------------------------------------------------------------------------------------------ Eq. 6-7


def test_soft_label_similarity_and_labels() -> None:
    rng = np.random.default_rng(5)
    ref = _unit(rng.normal(size=(20, 6)))
    sims = soft_label_similarity([3, 4, 5], 2, ref)
    assert sims.dtype == np.float32 and sims.shape == (3,)
    np.testing.assert_allclose(sims, ref[[3, 4, 5]] @ ref[2], atol=1e-6)
    batch = soft_label_similarity(np.array([[3, 4], [5, 6]]), np.array([2, 0]), ref)
    np.testing.assert_allclose(batch, [ref[[3, 4]] @ ref[2], ref[[5, 6]] @ ref[0]], atol=1e-6)
    # identical embeddings: 1 after clipping (never 1 + ulp)
    dup = np.tile(ref[:1] * np.float32(1.0000001), (2, 1))
    assert soft_label_similarity([1], 0, dup).max() <= 1.0
    with pytest.raises(ValueError):
        soft_label_similarity([[1, 2]], [0, 1], ref)
    labels = soft_labels(np.array([0.95, 0.9, 0.5, -0.2, 0.91], dtype=np.float32))
    np.testing.assert_allclose(labels, [0.95, 0.0, 0.0, 0.0, 0.91])  # strictly greater than T
    assert labels.dtype == np.float32
    np.testing.assert_allclose(soft_labels([0.6, 0.4], threshold=0.5), [0.6, 0.0])




def test_swap_rule_positions_is_the_first_m_minus_1_negatives() -> None:
    assert swap_rule_positions([True, False, False, True, False, False], 4).tolist() == [1, 2, 4]
    assert swap_rule_positions(np.array([False, True, False]), 4).tolist() == [0, 2]  # short: what there is
    assert swap_rule_positions([], 3).tolist() == []


# ------------------------------------------------------------------------------------ ranking with labels


def test_ranking_order_puts_positives_first_among_equal_scores() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1], dtype=np.float32)
    idx = np.array([10, 11, 12, 13, 14])
    is_pos = np.array([False, False, False, True, False])
    assert ranking_order(scores, idx, is_pos).tolist() == [1, 3, 0, 2, 4]


def test_positive_ranks_optimistic_rule_against_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    row = np.round(rng.normal(size=300), 1).astype(np.float32)  # many ties
    for pos in (np.array([5]), np.array([7, 3, 250]), np.flatnonzero(row == row[9])):
        order = ranking_order(row, np.arange(row.size), np.isin(np.arange(row.size), pos))
        position = np.empty(row.size, dtype=np.int64)
        position[order] = np.arange(1, row.size + 1)
        np.testing.assert_array_equal(positive_ranks(row, pos), position[pos])


# ------------------------------------------------------------------------------------------ top-k permutation


def test_rerank_order_sorts_by_score_then_retriever_rank() -> None:
    assert rerank_order([0.5, 0.9, 0.5, 0.9]) == [1, 3, 0, 2]
    assert rerank_order(np.array([1.0, 1.0, 2.0]), retriever_ranks=[2, 1, 3]) == [2, 1, 0]
    with pytest.raises(ValueError, match="retriever ranks"):
        rerank_order([1.0, 2.0], [0])


def test_make_labels_modes() -> None:
    sims = [0.95, 0.9, 0.5, 0.91, 1.0000001]
    assert make_labels(sims, 0.9, "soft") == pytest.approx([0.95, 0.0, 0.0, 0.91, 1.0])
    assert make_labels(sims, 0.9, "hard") == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert make_labels(sims, 0.9, "gt-only") == [0.0] * 5
    with pytest.raises(ValueError, match="mode"):
        make_labels(sims, 0.9, "fuzzy")


# ------------------------------------------------------------------------------ production calls the rules


def test_mine_validate_training_and_evaluation_call_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions tested above are the ones production runs (issue 11: no twin that production skips)."""
    import pyarrow as pa

    from skylink_model.data import build_group
    from skylink_model.evaluation import reranked_topk
    from skyrank import validate
    from skyrank.mining import mine

    calls: dict[str, int] = {}

    def spy(name: str):
        real = getattr(rules, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(rules, name, wrapper)

    for name in ("swap_rule_positions", "soft_label_similarity", "positive_ranks", "ranking_order", "rerank_order"):
        spy(name)
    rng = np.random.default_rng(1)
    g = _unit(rng.normal(size=(12, 4)))
    rows = mine([f"q{i}" for i in range(3)], ["0", "1", "2"], _unit(g[:3] + 0.01), [f"g{i}" for i in range(12)],
                [str(i) for i in range(12)], g, m=4)
    assert {k: calls.get(k, 0) > 0 for k in ("swap_rule_positions", "soft_label_similarity", "positive_ranks",
                                            "ranking_order")} == dict.fromkeys(
        ("swap_rule_positions", "soft_label_similarity", "positive_ranks", "ranking_order"), True)
    assert reranked_topk(["a", "b", "c"], {"a": 0.1, "b": 0.7, "c": 0.7}, 3) == ["b", "c", "a"]
    assert calls["rerank_order"] == 1
    before = calls["swap_rule_positions"]

    problems = validate._Problems()
    validate._check_retriever_table("t", pa.Table.from_pylist(rows), 4, None, None, problems)
    assert problems.all() == [] and calls["swap_rule_positions"] == before + len(rows)
    monkeypatch.setattr(rules, "make_labels", lambda sims, threshold, mode: [0.25] * len(sims))
    assert build_group(rows[0], k=3).labels == [1.0, 0.25, 0.25]
