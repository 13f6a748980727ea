"""Re-rankers behind one interface (:class:`Reranker`), for ``skyrank bench``'s leaderboard.

``create_reranker(name, ...)`` builds one: ``skylink`` (a trained run), ``listwise`` (SkyLink appendix A.8),
``pointwise`` (yes/no log-odds), ``pairwise`` (all pairs, expected wins) and ``pairwise-bubble`` (bubble passes).
Prompt texts live in :mod:`skylink_model.rerankers.prompts`.
"""

from __future__ import annotations

from skylink_model.rerankers import pairwise, pointwise, trained  # noqa: F401  (register the re-rankers)
from skylink_model.rerankers._base import (
    Cost,
    Reranker,
    RerankOutput,
    TokenCounter,
    create_reranker,
    list_rerankers,
    register_reranker,
)
from skylink_model.rerankers.pairwise import PairwiseReranker, all_pairs_scores, bubble_scores
from skylink_model.rerankers.pointwise import PointwiseReranker
from skylink_model.rerankers.trained import ListwiseReranker, SkyLinkReranker

__all__ = [
    "Cost", "ListwiseReranker", "PairwiseReranker", "PointwiseReranker", "RerankOutput", "Reranker",
    "SkyLinkReranker", "TokenCounter", "all_pairs_scores", "bubble_scores", "create_reranker", "list_rerankers",
    "register_reranker",
]  # fmt: skip
