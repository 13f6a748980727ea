"""Retrieval metrics: Recall@K, the Market-1501 / University-1652 AP, and SkyLink's conservative re-rank AP.

Pure Python / numpy. Conventions (design.md "Metrics"; notes/retrievers.md sections 0.2 and 9):

* **Ranks are 1-based positions in the full ranking** of the gallery, junk already removed. Every positive of a
  query has one rank; ranks are distinct positive integers (duplicates raise ``ValueError``: the AP formula is
  not defined for them). ``skyrank.mining`` produces such ranks with its optimistic tie rule (a positive is
  placed ahead of every negative with the same score, positives among themselves by gallery index).
* **AP** is the trapezoid AP of ``compute_mAP`` used by University-1652, Sample4Geo, MCCG, SDPL and SUES-200
  (Market-1501 evaluation code). With the positives' ranks sorted, ``r_1 < ... < r_n``::

      AP = sum_i (1/n) * (old_precision_i + precision_i) / 2
      precision_i     = i / r_i
      old_precision_i = (i - 1) / (r_i - 1)   if r_i != 1   else 1

  A single positive at rank r gives 1 if r = 1, else 1/(2r) (not 1/r). No positive gives 0.
* **Recall@K** of a query is 1 if any positive has rank <= K, else 0.
* **Dataset-level numbers** (:func:`retrieval_metrics`) are means over *all* queries, in percent; a query with
  no positive contributes 0 to every sum and still counts in the denominator (as the original evaluators do).
* **Re-ranking** permutes only the retriever's top-k: a positive inside the top-k takes its position in the new
  order, a positive ranked beyond k keeps its full rank (:func:`rerank_positive_ranks`). The AP computed from
  those ranks is the *full-ranking* AP after re-ranking.
* **Conservative re-rank AP** (SkyLink, arXiv 2603.08063, appendix A.1; :func:`conservative_ap`) looks only at
  the re-ranked top-k list: the same trapezoid formula over the 1-based positions of the positives found *in
  that list*, with n = the number of positives found in the list (positives outside it are ignored); 0 when no
  positive is in the list. Reports must label which AP they show.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from skyrank.format.schema import RETRIEVER_COLUMNS

#: The retriever-config column holding the positives' full-ranking ranks (checked against the schema below).
POSITIVE_RANKS_COLUMN = "positive_ranks"
if POSITIVE_RANKS_COLUMN not in RETRIEVER_COLUMNS:  # pragma: no cover - guards against a schema rename
    raise ImportError(f"skyrank.format.schema.RETRIEVER_COLUMNS has no {POSITIVE_RANKS_COLUMN!r} column")


def _checked_ranks(positive_ranks: Iterable[int]) -> list[int]:
    """Sorted list of 1-based, distinct integer ranks; ``ValueError`` otherwise."""
    ranks: list[int] = []
    for r in positive_ranks:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise ValueError(f"positive ranks must be integers, got {r!r}")
        ranks.append(int(r))
    ranks.sort()
    if ranks and ranks[0] < 1:
        raise ValueError(f"positive ranks are 1-based, got {ranks[0]}")
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"positive ranks must be distinct, got {ranks}")
    return ranks


def _ap_sorted(ranks: list[int]) -> float:
    """Trapezoid AP of sorted, checked ranks."""
    n = len(ranks)
    if n == 0:
        return 0.0
    total = 0.0
    for i, r in enumerate(ranks, start=1):
        precision = i / r
        old_precision = (i - 1) / (r - 1) if r != 1 else 1.0
        total += (old_precision + precision) / 2.0
    return total / n


def average_precision(positive_ranks: Sequence[int]) -> float:
    """Market-1501 / University-1652 trapezoid AP from the 1-based full-ranking ranks of every positive.

    ``AP = sum_i (1/n) (old_precision_i + precision_i) / 2`` over the sorted ranks (module docstring).
    A single positive at rank r gives 1 if r = 1 else 1/(2r); no positive gives 0.0.
    """
    return _ap_sorted(_checked_ranks(positive_ranks))


def recall_at_k(positive_ranks: Sequence[int], k: int) -> float:
    """1.0 if the best-ranked positive has rank <= ``k``, else 0.0 (also 0.0 with no positive)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = _checked_ranks(positive_ranks)
    return 1.0 if ranks and ranks[0] <= k else 0.0


def conservative_ap(ranked_ids: Sequence[str], positive_ids: Iterable[str]) -> float:
    """SkyLink's conservative re-rank AP (arXiv 2603.08063, appendix A.1) over one re-ranked top-k list.

    The trapezoid AP of :func:`average_precision` applied to the 1-based positions, in ``ranked_ids``, of the
    positives that occur in it; n is the number of positives found in the list (positives outside the list are
    ignored, not counted as misses). 0.0 when no positive is in the list. For one positive: 1 at position 1,
    1/(2p) at position p > 1, 0 when absent.
    """
    ids = list(ranked_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ranked_ids contains duplicates")
    positives = set(positive_ids)
    positions = [pos for pos, cid in enumerate(ids, start=1) if cid in positives]
    return average_precision(positions)


def rerank_positive_ranks(
    reranked_topk_ids: Sequence[str],
    positive_ids: Sequence[str],
    positive_ranks: Sequence[int],
    k: int,
) -> list[int]:
    """The positives' full-ranking ranks after the retriever's top-``k`` has been permuted.

    ``reranked_topk_ids`` is the new order of the full ranking's first ``k`` entries (exactly ``k`` ids; fewer
    only if the whole gallery is shorter, in which case pass ``k=len(reranked_topk_ids)``). A positive whose
    rank is <= ``k`` gets its 1-based position in the new order; a positive ranked beyond ``k`` keeps its rank
    (design.md: re-ranking permutes only the top-k). Returns ranks aligned with ``positive_ids``.
    Raises ``ValueError`` when the list cannot be a permutation of that top-k (wrong length, duplicates, a
    positive of rank <= k missing from it, or a positive of rank > k inside it).
    """
    ids = list(reranked_topk_ids)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ids) != k:
        raise ValueError(f"reranked_topk_ids must hold exactly k={k} ids, got {len(ids)}")
    if len(set(ids)) != k:
        raise ValueError("reranked_topk_ids contains duplicates")
    pos_ids = list(positive_ids)
    ranks = [int(r) for r in positive_ranks]
    if len(pos_ids) != len(ranks):
        raise ValueError(f"{len(pos_ids)} positive ids but {len(ranks)} ranks")
    _checked_ranks(ranks)
    position = {cid: p for p, cid in enumerate(ids, start=1)}
    out: list[int] = []
    for pid, rank in zip(pos_ids, ranks, strict=True):
        if rank <= k:
            if pid not in position:
                raise ValueError(f"positive {pid!r} has rank {rank} <= k={k} but is missing from the re-ranked list")
            out.append(position[pid])
        else:
            if pid in position:
                raise ValueError(f"positive {pid!r} has rank {rank} > k={k} but appears in the re-ranked list")
            out.append(rank)
    return out


def retrieval_metrics(rows: Iterable[Mapping[str, Sequence[int]]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean Recall@K for each K in ``ks`` and mean AP over retriever-config rows, in percent.

    Each row is a mapping with the ``positive_ranks`` column (1-based full-ranking ranks, e.g. a row of
    ``skyrank.mining.mine`` or of a loaded retriever config). Keys are ``"R@<k>"`` for each k, then ``"AP"``
    (the full-ranking trapezoid AP). Queries without positives count in the denominator with 0.
    """
    ks = tuple(int(k) for k in ks)
    for k in ks:
        if k < 1:
            raise ValueError(f"every K must be >= 1, got {k}")
    hits = [0] * len(ks)
    ap_sum = 0.0
    count = 0
    for row in rows:
        ranks = _checked_ranks(row[POSITIVE_RANKS_COLUMN])
        count += 1
        if not ranks:
            continue
        for j, k in enumerate(ks):
            hits[j] += ranks[0] <= k
        ap_sum += _ap_sorted(ranks)
    if count == 0:
        raise ValueError("retrieval_metrics needs at least one row")
    result = {f"R@{k}": float(100.0 * h / count) for k, h in zip(ks, hits, strict=True)}
    result["AP"] = float(100.0 * ap_sum / count)
    return result
