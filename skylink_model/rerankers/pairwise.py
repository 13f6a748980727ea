"""Pairwise zero-shot re-ranking: the LVLM says which of two candidates shows the query's location.

One comparison is one prompt, ``<query> <candidate a> <candidate b>`` + :func:`~skylink_model.rerankers.prompts.
pairwise_prompt`; its outcome is p(a ≻ b) = σ(logsumexp(z_"1") − logsumexp(z_"2")) from the next-token logits.
arXiv 2603.27251 found pairwise comparison (LLaVA) raised R@1 on VIGOR where pointwise scoring did not. The
comparisons are aggregated over the retriever's top-n (n = k re-ranked candidates) by one of two stated methods:

* ``all-pairs`` (default; Borda count): every unordered pair once, the better-ranked candidate (retriever order)
  shown first; a candidate's score is its expected number of wins, s_i = Σ_{j≠i} p(i ≻ j). n(n−1)/2 calls
  (45 for n = 10), all independent, so they are batched; ``both_orders`` also asks each pair the other way round and
  averages p(i ≻ j) = (p_ij + 1 − p_ji)/2 against position bias: n(n−1) calls.
* ``bubble`` (the sliding window of size 2 of RankGPT-style rankers): ``passes`` bubble passes from the bottom of
  the retriever's order to the top; at each step the lower candidate replaces the upper when p(lower ≻ upper) > 0.5.
  Pass t fixes position t, so one pass puts the comparator's winner first (what R@1 needs) in n−1 calls, and n−1
  passes sort completely in n(n−1)/2 calls. Calls: Σ_{t<passes} (n−1−t). The score is n − final position. The
  comparisons of a pass depend on each other, so each is its own forward.

Ties in the scores keep the retriever's order (:func:`skyrank.format.rules.rerank_order`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from skylink_model.rerankers import prompts
from skylink_model.rerankers._base import Reranker, register_reranker
from skylink_model.rerankers._lvlm import answer_margins, answer_token_ids, load_lvlm, render

#: ``compare(pairs)`` → p(a ≻ b) for each ``(a, b)`` (indices into the candidates, ``a`` shown first).
Comparator = Callable[[Sequence[tuple[int, int]]], list[float]]

METHODS = ("all-pairs", "bubble")


def all_pairs_calls(n: int, both_orders: bool = False) -> int:
    """Comparisons :func:`all_pairs_scores` asks for: n(n−1)/2, or n(n−1) with ``both_orders``."""
    return n * (n - 1) // (1 if both_orders else 2)


def bubble_calls(n: int, passes: int) -> int:
    """Comparisons :func:`bubble_scores` asks for: Σ_{t < min(passes, n−1)} (n − 1 − t)."""
    return sum(n - 1 - t for t in range(min(passes, max(n - 1, 0))))


def all_pairs_scores(n: int, compare: Comparator, *, both_orders: bool = False) -> tuple[list[float], int]:
    """Expected wins s_i = Σ_j p(i ≻ j) over every pair of ``n`` candidates (index order = retriever order).

    Returns ``(scores, calls)``.
    """
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return [0.0] * n, 0
    forward = compare(pairs)
    backward = compare([(j, i) for i, j in pairs]) if both_orders else None
    scores = [0.0] * n
    for m, (i, j) in enumerate(pairs):
        p = float(forward[m]) if backward is None else (float(forward[m]) + 1.0 - float(backward[m])) / 2.0
        scores[i] += p
        scores[j] += 1.0 - p
    return scores, len(pairs) * (2 if both_orders else 1)


def bubble_scores(n: int, compare: Comparator, *, passes: int = 1) -> tuple[list[float], int]:
    """``passes`` bubble passes from the bottom; score = n − final position. Returns ``(scores, calls)``."""
    if passes < 1:
        raise ValueError(f"`passes` must be ≥ 1, got {passes}")
    order = list(range(n))
    calls = 0
    for t in range(min(passes, max(n - 1, 0))):
        for pos in range(n - 1, t, -1):
            upper, lower = order[pos - 1], order[pos]
            p_upper = float(compare([(upper, lower)])[0])
            calls += 1
            if p_upper < 0.5:  # the lower candidate wins: it moves up and keeps climbing
                order[pos - 1], order[pos] = lower, upper
    scores = [0.0] * n
    for position, index in enumerate(order):
        scores[index] = float(n - position)
    return scores, calls


class PairwiseReranker(Reranker):
    """A base LVLM comparing two candidates at a time, aggregated by ``all-pairs`` or ``bubble`` (no training)."""

    zero_shot = True

    def __init__(self, model: Any, processor: Any, *, method: str = "all-pairs", passes: int = 1,
                 both_orders: bool = False, batch_size: int = 16, name: str | None = None) -> None:  # fmt: skip
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
        self.model, self.processor, self.batch_size = model, processor, int(batch_size)
        self.method, self.passes, self.both_orders = method, int(passes), bool(both_orders)
        self.name = name or ("pairwise" if method == "all-pairs" else "pairwise-bubble")
        tok = getattr(processor, "tokenizer", processor)
        self.answers = tuple(answer_token_ids(tok, w) for w in prompts.PAIRWISE_ANSWERS)

    def describe(self) -> dict[str, Any]:
        if self.method == "all-pairs":
            calls = "k(k-1)" if self.both_orders else "k(k-1)/2"
            how = "all pairs, expected wins (Borda)" + (", both orders" if self.both_orders else "")
        else:
            calls = f"sum over {self.passes} pass(es) of (k-1-t)"
            how = f"bubble passes from the bottom ({self.passes}), score = k - position"
        return {**super().describe(), "method": f"pairwise: {how}", "calls_per_query": calls,
                "prompt": "skylink_model.rerankers.prompts.pairwise_prompt"}  # fmt: skip

    def _score(self, query_image: Any, candidate_images: Sequence[Any], *, direction: str,
               candidate_keys: Sequence[str] | None) -> tuple[list[float], int, dict[str, Any]]:  # fmt: skip
        text = render(self.processor, 3, prompts.pairwise_prompt(direction))

        def compare(pairs: Sequence[tuple[int, int]]) -> list[float]:
            images = [(query_image, candidate_images[a], candidate_images[b]) for a, b in pairs]
            margins = answer_margins(self.model, self.processor, text, images, self.answers, self.batch_size)
            return [1.0 / (1.0 + math.exp(-m)) for m in margins]

        n = len(candidate_images)
        if self.method == "all-pairs":
            scores, calls = all_pairs_scores(n, compare, both_orders=self.both_orders)
        else:
            scores, calls = bubble_scores(n, compare, passes=self.passes)
        return scores, calls, {}


def _factory(method: str) -> Callable[..., PairwiseReranker]:
    def build(*, base_model: str | None = None, model: Any = None, processor: Any = None, device: str | None = None,
              batch_size: int = 16, passes: int = 1, both_orders: bool = False,
              **budget: Any) -> PairwiseReranker:  # fmt: skip
        if model is None:
            model, processor = load_lvlm(str(base_model), device=device, **budget)
        return PairwiseReranker(model, processor, method=method, passes=passes, both_orders=both_orders,
                                batch_size=batch_size)  # fmt: skip

    return build


register_reranker("pairwise")(_factory("all-pairs"))
register_reranker("pairwise-bubble")(_factory("bubble"))
