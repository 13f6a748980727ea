"""The re-ranker interface: pairwise aggregation on known comparators (worked by hand), call counts, and every
registered re-ranker on a tiny Qwen2-VL (scores, cost, prompts naming the views)."""

from __future__ import annotations

import math

import pytest
import torch

from skylink_model.rerankers import (
    TokenCounter,
    all_pairs_scores,
    bubble_scores,
    create_reranker,
    list_rerankers,
    prompts,
)
from skylink_model.rerankers.pairwise import all_pairs_calls, bubble_calls
from skyrank.errors import UnknownNameError
from skyrank.format.rules import rerank_order
from tests.skylink_model.conftest import make_image


def by_value(values, log=None):
    """A transitive comparator: p(a ≻ b) = 1 if values[a] > values[b] else 0 (records every pair asked)."""

    def compare(pairs):
        if log is not None:
            log.extend(pairs)
        return [1.0 if values[a] > values[b] else 0.0 for a, b in pairs]

    return compare


# ---------------------------------------------------------------------------------------------- all pairs
def test_all_pairs_sorts_by_a_known_comparator():
    values = [3, 1, 4, 2, 5]  # retriever order 0..4
    asked = []
    scores, calls = all_pairs_scores(5, by_value(values, asked))
    assert scores == [2.0, 0.0, 3.0, 1.0, 4.0]  # wins: 3 beats {1, 2}, 1 none, 4 beats three, ...
    assert rerank_order(scores) == [4, 2, 0, 3, 1]  # = descending values
    assert calls == len(asked) == 10 == all_pairs_calls(5)
    assert all(a < b for a, b in asked)  # the better-ranked candidate is shown first


def test_all_pairs_soft_wins_worked_by_hand():
    p = {(0, 1): 0.9, (0, 2): 0.4, (1, 2): 0.3}
    scores, calls = all_pairs_scores(3, lambda pairs: [p[x] for x in pairs])
    # s0 = 0.9 + 0.4, s1 = 0.1 + 0.3, s2 = 0.6 + 0.7
    assert scores == pytest.approx([1.3, 0.4, 1.3])
    assert calls == 3
    assert rerank_order(scores) == [0, 2, 1]  # the tie between 0 and 2 keeps the retriever's order


def test_both_orders_cancel_a_position_bias():
    first_wins = lambda pairs: [0.8] * len(pairs)  # noqa: E731 - always prefers the candidate shown first
    biased, calls = all_pairs_scores(3, first_wins)
    assert biased == pytest.approx([1.6, 1.0, 0.4]) and calls == 3
    fair, calls = all_pairs_scores(3, first_wins, both_orders=True)
    assert fair == pytest.approx([1.0, 1.0, 1.0]) and calls == 6 == all_pairs_calls(3, both_orders=True)


def test_intransitive_comparator_ties_and_keeps_retriever_order():
    beats = {(0, 1), (1, 2), (2, 0)}  # rock, paper, scissors
    scores, _ = all_pairs_scores(3, lambda pairs: [1.0 if x in beats else 0.0 for x in pairs])
    assert scores == [1.0, 1.0, 1.0]
    assert rerank_order(scores) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- bubble
def test_one_bubble_pass_worked_by_hand():
    values = [3, 1, 4, 2]
    asked = []
    scores, calls = bubble_scores(4, by_value(values, asked), passes=1)
    # pos 3: (2, 3) upper 4 > 2 keeps; pos 2: (1, 2) 1 < 4 swaps -> [0, 2, 1, 3]; pos 1: (0, 2) 3 < 4 -> [2, 0, 1, 3]
    assert asked == [(2, 3), (1, 2), (0, 2)]
    assert scores == [3.0, 2.0, 4.0, 1.0]
    assert calls == 3 == bubble_calls(4, 1)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_full_bubble_sort_and_call_counts(n):
    values = [(7 * i) % n for i in range(n)] if n > 1 else [0]
    scores, calls = bubble_scores(n, by_value(values), passes=max(n - 1, 1))
    assert [values[i] for i in rerank_order(scores)] == sorted(values, reverse=True)
    assert calls == bubble_calls(n, n - 1) == n * (n - 1) // 2
    top, calls_one = bubble_scores(n, by_value(values), passes=1)
    assert values[rerank_order(top)[0]] == max(values)  # one pass finds the winner
    assert calls_one == max(n - 1, 0)


def test_bubble_passes_must_be_positive():
    with pytest.raises(ValueError, match="passes"):
        bubble_scores(3, by_value([1, 2, 3]), passes=0)


# ---------------------------------------------------------------------------------------------- registry
def test_registry_and_unknown_name():
    assert {"skylink", "listwise", "pointwise", "pairwise", "pairwise-bubble"} <= set(list_rerankers())
    with pytest.raises(UnknownNameError, match="pointwise"):
        create_reranker("pointwize")


def test_prompts_name_the_views():
    assert "drone-view query" in prompts.pointwise_prompt("d2s")
    s2d = prompts.pairwise_prompt("s2d")
    assert "satellite-view query" in s2d and "drone-view candidates" in s2d
    with pytest.raises(ValueError, match="direction"):
        prompts.pointwise_prompt("x2y")


# ---------------------------------------------------------------------------------------------- tiny model
@pytest.fixture(scope="module")
def lvlm(tiny_qwen2_vl_dir):
    from skylink_model.rerankers._lvlm import load_lvlm

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_lvlm(str(tiny_qwen2_vl_dir))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def query_and_candidates():
    return make_image(56, 100), [make_image(56, i) for i in range(4)]


@pytest.mark.parametrize(
    ("name", "kwargs", "calls"),
    [("pointwise", {}, 4), ("pairwise", {}, 6), ("pairwise", {"both_orders": True}, 12),
     ("pairwise-bubble", {}, 3), ("pairwise-bubble", {"passes": 3}, 6), ("listwise", {"max_new_tokens": 4}, 1)],
)  # fmt: skip
def test_each_zero_shot_reranker_on_a_tiny_model(lvlm, query_and_candidates, name, kwargs, calls):
    model, processor = lvlm
    query, candidates = query_and_candidates
    reranker = create_reranker(name, model=model, processor=processor, **kwargs)
    out = reranker.score(query, candidates, direction="d2s")
    assert len(out.scores) == 4 and all(math.isfinite(s) for s in out.scores)
    assert out.cost.calls == calls
    assert out.cost.tokens > 0 and out.cost.seconds > 0
    assert reranker.zero_shot and reranker.describe()["name"] == reranker.name


def test_pointwise_score_is_the_yes_no_log_odds(lvlm, query_and_candidates):
    from skylink_model.rerankers._lvlm import answer_token_ids, render

    model, processor = lvlm
    query, candidates = query_and_candidates
    out = create_reranker("pointwise", model=model, processor=processor, batch_size=3).score(
        query, candidates, direction="s2d"
    )
    text = render(processor, 2, prompts.pointwise_prompt("s2d"))
    assert "satellite-view query" in text
    yes, no = (answer_token_ids(processor.tokenizer, w) for w in ("yes", "no"))
    batch = processor(text=[text], images=[[query, candidates[2]]], return_tensors="pt")
    with torch.no_grad(), TokenCounter(model) as counter:
        logits = model(**batch).logits[0, -1]
    expected = float(torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0))
    assert out.scores[2] == pytest.approx(expected, abs=1e-4)  # batched with padding = one pair alone
    assert counter.tokens == batch["input_ids"].numel() and counter.forwards == 1


def test_skylink_reranker_matches_rerank_query(tiny_config, query_and_candidates):
    from skylink_model.model import get_skylink_model
    from skylink_model.rerank import rerank_query

    query, candidates = query_and_candidates
    skylink = get_skylink_model(tiny_config).eval()
    reranker = create_reranker("skylink", skylink=skylink)
    out = reranker.score(query, candidates, candidate_keys=[f"c{i}" for i in range(4)])
    assert out.scores == pytest.approx(rerank_query(skylink, query, candidates).tolist(), abs=1e-5)
    assert out.cost.calls == 4 and out.cost.tokens > 0 and not reranker.zero_shot


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_zero_shot_rerankers_on_other_families(tmp_path, family, query_and_candidates):
    from skylink_model.testing import make_tiny_model

    folder = make_tiny_model(tmp_path / family, family)
    query, candidates = query_and_candidates
    for name, calls in (("pointwise", 4), ("pairwise", 6)):
        out = create_reranker(name, base_model=str(folder)).score(query, candidates[:4])
        assert len(out.scores) == 4 and all(math.isfinite(s) for s in out.scores) and out.cost.calls == calls
