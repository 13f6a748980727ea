"""Score fusion of SkyLink with the first-stage retriever, its weight chosen on validation queries.

SkyLink ranks a query's top-k by its score S alone (arXiv 2603.08063, "Inference"). Interpolating the first-stage
and re-ranker scores is the standard IR answer when the re-ranker alone does not help everywhere (notes/field.md:
SkyLink gained +0.00 on University-1652 S2D). Both scores live on different scales, so each is standardised per
query over the top-k before mixing::

    fused_j = z(S)_j + W * z(retriever)_j,      z(x)_j = (x_j - mean(x)) / std(x)   (population std over the top-k)

A constant score vector (std 0) standardises to zeros. ``W = 0`` is SkyLink alone; a large W is the retriever's
order with SkyLink breaking near-ties, and ``W = inf`` is exactly the retriever's order (SkyLink ignored; written
``"inf"`` in JSON), so a validation set on which SkyLink never helps gives a fused row equal to the retriever's.
:func:`skylink_model.evaluation.choose_weight` picks W from :data:`WEIGHT_GRID` on validation queries (never the
test split): by validation ``AP_precision`` (the mean reciprocal rank for one positive: smoother than R@1 on a few
hundred queries) with the one-standard-error rule: the largest W (the closest to the retriever) whose validation
score is within one standard error of the best W's. A gain that the validation queries cannot tell from noise
keeps W = inf, so the fused row does not pay for a lucky validation draw on the test split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

#: The weights ``auto`` tries (0 = SkyLink alone; inf = the retriever's order).
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0, math.inf)

#: The validation metric ``auto`` maximises.
OBJECTIVE = "AP_precision"

#: How ``auto`` picks W from the grid: ``one-se`` (the largest W within one standard error of the best) or ``best``.
RULES: tuple[str, ...] = ("one-se", "best")
DEFAULT_RULE = "one-se"


def zscore(values: Sequence[float]) -> np.ndarray:
    """Per-query standardisation: ``(x - mean) / std`` (population std); zeros when the values are all equal."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"zscore needs a non-empty 1-D list of scores, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("zscore got a non-finite score")
    std = float(x.std())
    if std == 0.0:
        return np.zeros_like(x)
    return (x - x.mean()) / std


def fuse_scores(reranker: Sequence[float], retriever: Sequence[float], weight: float) -> np.ndarray:
    """``z(reranker) + weight * z(retriever)`` for one query's top-k; ``weight = inf`` gives ``z(retriever)``."""
    if len(reranker) != len(retriever):
        raise ValueError(f"{len(reranker)} re-ranker scores but {len(retriever)} retriever scores")
    weight = float(weight)
    if math.isnan(weight) or weight < 0:
        raise ValueError(f"the fusion weight must be a number >= 0 (or inf), got {weight}")
    if math.isinf(weight):
        zscore(reranker)  # still checked
        return zscore(retriever)
    return zscore(reranker) + weight * zscore(retriever)


def fused_scores_by_query(
    rows: Sequence[Mapping],
    scores_by_query: Mapping[str, Mapping[str, float]],
    top_k: int,
    weight: float,
) -> dict[str, dict[str, float]]:
    """``{query_id: {candidate_id: fused score}}`` over each row's top-k (``retrieved_scores`` is the retriever's)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        retr = [float(s) for s in list(row["retrieved_scores"])[:top_k]]
        if qid not in scores_by_query:
            raise KeyError(f"no re-ranker scores for query {qid!r}")
        own = scores_by_query[qid]
        missing = [c for c in top if c not in own]
        if missing:
            raise KeyError(f"query {qid!r}: no score for candidate(s) {missing[:5]} of the top-{top_k}")
        fused = fuse_scores([float(own[c]) for c in top], retr, weight)
        out[qid] = dict(zip(top, fused.tolist(), strict=True))
    return out


def weight_key(weight: float) -> str:
    """The JSON key of a weight (``0.25`` -> ``"0.25"``, ``inf`` -> ``"inf"``)."""
    return f"{float(weight):g}"


def weight_json(weight: float | None) -> float | str | None:
    """A weight as strict JSON allows it: ``inf`` becomes the string ``"inf"``."""
    return "inf" if weight is not None and math.isinf(weight) else weight


__all__ = [
    "WEIGHT_GRID", "OBJECTIVE", "RULES", "DEFAULT_RULE", "zscore", "fuse_scores", "fused_scores_by_query",
    "weight_key", "weight_json",
]  # fmt: skip
