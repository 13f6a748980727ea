"""Retrieval metrics: Recall@K, R@top1%, both APs (Market-1501 trapezoid and precision) and the re-rank APs.

Pure Python / numpy; **every metric SkyRank reports is defined here**, and evaluation
(:mod:`skylink_model.evaluation`, ``skyrank build``'s summary) calls these functions. Conventions (design.md
"Metrics"; notes/retrievers.md sections 0.2 and 9; notes/field.md):

* **Ranks are 1-based positions in the full ranking** of the gallery, junk already removed. Every positive of a
  query has one rank; ranks are distinct positive integers (duplicates raise ``ValueError``: AP is not defined
  for them). **Tie rule**: ``skyrank.mining`` places a positive ahead of every negative with the same retriever
  score (positives among themselves by gallery index), i.e. the optimistic rule; a re-ranker's ties within the
  top-k keep the retriever's order (:data:`TIE_RULE`).
* **Two APs, named** (``definition=``, :data:`AP_DEFINITIONS`). With the positives' sorted ranks
  ``r_1 < ... < r_n`` and ``precision_i = i / r_i``:

  - ``"market1501"``: the trapezoid AP of ``compute_mAP`` used by the University-1652, Sample4Geo, MCCG, SDPL and
    SUES-200 evaluators (Market-1501 code)::

        AP = (1/n) * sum_i (old_precision_i + precision_i) / 2,   old_precision_i = (i-1)/(r_i-1) if r_i != 1 else 1

    A single positive at rank r gives 1 if r = 1, else 1/(2r) (not 1/r).
  - ``"precision"``: non-interpolated AP, ``AP = (1/n) * sum_i precision_i``; a single positive at rank r gives
    1/r. This is the "conventional AP" of SkyLink's Table 1 (arXiv 2603.08063): every University-1652 D2S AP there
    exceeds the trapezoid's cap ``R@1 + (R@5 - R@1)/4 + (100 - R@5)/12`` and fits this definition.

  **Normaliser** (both): n = the number of positives the query has in the gallery (drone->satellite: 1;
  satellite->drone on University-1652: the location's 54 drone views). Every positive has a full-ranking rank,
  so the AP is exact; no positive gives 0.
* **Recall@K** of a query is 1 if any positive has rank <= K, else 0. **R@top1%** is the CMC entry the
  benchmarks' evaluators print as ``Recall@top1``: ``CMC[round(N * 0.01)]`` with 0-based indexing over a gallery
  of N images (Python's ``round``, half to even), i.e. Recall@K with ``K = round(0.01 N) + 1``, capped at N
  (:func:`top1_percent_k`). University-1652 D2S (N = 951): K = 11.
* **Dataset-level numbers** (:func:`summarize`, :func:`retrieval_metrics`) are means over *all* queries, in percent;
  a query with no positive contributes 0 to every sum and still counts in the denominator (as the evaluators do).
* **Re-ranking** permutes only the retriever's top-k: a positive inside the top-k takes its position in the new
  order, a positive ranked beyond k keeps its full rank (:func:`rerank_positive_ranks`). ``AP`` and
  ``AP_precision`` are full-ranking APs after re-ranking.
* **Conservative re-rank AP** (SkyLink appendix A.1; ``AP_conservative``, :func:`conservative_ap`): the precision
  AP over the full ranking with the top-k permuted, but 0 for a query whose top-k holds no positive. With one
  positive (D2S) it is 1/p for a positive at top-k position p, else 0.
* **Top-k list AP** (``AP_topk_market1501``, :func:`topk_list_ap`; SkyRank's earlier "conservative AP"): the
  trapezoid AP over the re-ranked top-k list alone, n = the positives found in it (those outside are ignored),
  0 when none is found. Kept for comparison with earlier SkyRank reports; it is not the paper's.
* **Each benchmark's own evaluator** (issue 20, :data:`PROTOCOLS`): which of the three R@1% definitions
  (:data:`TOP1_PERCENT_DEFINITIONS`: Sample4Geo's ``N // 100``, SAFA/VIGOR's ``int(0.01 N) + 1``, the CMC above),
  whether AP is reported, and the extra metrics: VIGOR's hit rate (:func:`vigor_hit`), DenseUAV's SDM@K
  (:func:`sdm_at_k`) and MA@m (:func:`ma_at_m`); the CVACT test positives (:func:`positives_within_radius`, 5 m)
  are computed at build time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: The retriever-config column holding the positives' full-ranking ranks (tests/skyrank/test_metrics.py checks it
#: against the schema; not imported here, so the benchmark readers that use this module stay free of datasets).
POSITIVE_RANKS_COLUMN = "positive_ranks"


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


#: The two AP definitions (module docstring): the evaluators' trapezoid and non-interpolated precision AP.
AP_DEFINITIONS: tuple[str, ...] = ("market1501", "precision")

#: How ties are ranked, stated in every evaluation JSON.
TIE_RULE = (
    "retriever ranking (skyrank.mining): a positive is placed ahead of every negative with the same score, "
    "positives among themselves by gallery index (optimistic); re-ranked top-k: candidates with equal re-ranker "
    "(or fused) scores keep the retriever's order"
)

#: Per-query metric columns, in report order: Recall@K, R@top1%, then the APs (module docstring).
AP_COLUMNS: dict[str, tuple[str, ...]] = {
    "market1501": ("AP", "AP_topk_market1501"),
    "precision": ("AP_precision", "AP_conservative"),
}

#: What each column means; evaluation copies this into its JSON (``metric_definitions``).
METRIC_DEFINITIONS: dict[str, str] = {
    "R@K": "Recall@K: percent of queries with a positive among the first K of the (re-ranked) full ranking",
    "R@top1%": (
        "the evaluators' Recall@top1: CMC[round(0.01 N)] in 0-based indexing over a gallery of N images "
        "(Python round, half to even), i.e. Recall@(round(0.01 N) + 1), capped at N"
    ),
    "AP": (
        "Market-1501 / University-1652 AP (definition 'market1501', trapezoid: one positive at rank r gives 1 if "
        "r = 1 else 1/(2r)) over the full ranking with only the top-k permuted; normaliser: all the query's "
        "positives in the gallery"
    ),
    "AP_precision": (
        "non-interpolated AP (definition 'precision', SkyLink Table 1's 'conventional AP': mean over positives of "
        "precision at each positive's rank, 1/r for one positive) over the full ranking with only the top-k "
        "permuted; normaliser: all the query's positives in the gallery"
    ),
    "AP_conservative": (
        "SkyLink appendix A.1 conservative AP: AP_precision of the query, 0 when its (re-ranked) top-k holds no "
        "positive"
    ),
    "AP_topk_market1501": (
        "trapezoid AP over the re-ranked top-k list alone (positives outside it ignored; 0 when none is in it); "
        "SkyRank's earlier 'AP_conservative', not the paper's"
    ),
}


def _check_definition(definition: str) -> str:
    if definition not in AP_DEFINITIONS:
        raise ValueError(f"AP definition must be one of {', '.join(AP_DEFINITIONS)}, got {definition!r}")
    return definition


def _ap_sorted(ranks: list[int], definition: str = "market1501") -> float:
    """AP of sorted, checked ranks under ``definition`` (module docstring)."""
    n = len(ranks)
    if n == 0:
        return 0.0
    total = 0.0
    if definition == "precision":
        for i, r in enumerate(ranks, start=1):
            total += i / r
        return total / n
    for i, r in enumerate(ranks, start=1):
        precision = i / r
        old_precision = (i - 1) / (r - 1) if r != 1 else 1.0
        total += (old_precision + precision) / 2.0
    return total / n


def average_precision(positive_ranks: Sequence[int], definition: str = "market1501") -> float:
    """AP from the 1-based full-ranking ranks of **every** positive of one query (n = their number).

    ``definition="market1501"``: the evaluators' trapezoid, ``(1/n) sum_i (old_precision_i + precision_i) / 2``
    (one positive at rank r: 1 if r = 1 else 1/(2r)). ``definition="precision"``: SkyLink Table 1's conventional
    AP, ``(1/n) sum_i i / r_i`` (one positive: 1/r). No positive gives 0.0 under both.
    """
    return _ap_sorted(_checked_ranks(positive_ranks), _check_definition(definition))


def recall_at_k(positive_ranks: Sequence[int], k: int) -> float:
    """1.0 if the best-ranked positive has rank <= ``k``, else 0.0 (also 0.0 with no positive)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = _checked_ranks(positive_ranks)
    return 1.0 if ranks and ranks[0] <= k else 0.0


def top1_percent_k(gallery_size: int) -> int:
    """The K of R@top1%: the evaluators' ``CMC[round(N * 0.01)]`` (0-based) is Recall@(round(0.01 N) + 1), <= N."""
    if isinstance(gallery_size, bool) or int(gallery_size) < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size!r}")
    n = int(gallery_size)
    return min(n, round(n * 0.01) + 1)


def conservative_ap(positive_ranks: Sequence[int], top_k: int) -> float:
    """SkyLink's conservative re-rank AP (arXiv 2603.08063, appendix A.1) of one query.

    The precision AP (:func:`average_precision` with ``definition="precision"``) of the full-ranking ranks after
    re-ranking, or 0.0 when no positive has rank <= ``top_k`` (the re-ranked list holds no positive).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ranks = _checked_ranks(positive_ranks)
    if not ranks or ranks[0] > top_k:
        return 0.0
    return _ap_sorted(ranks, "precision")


def topk_list_ap(ranked_ids: Sequence[str], positive_ids: Iterable[str], definition: str = "market1501") -> float:
    """AP over one re-ranked top-k list alone (``AP_topk_market1501`` with the default definition).

    The AP of the 1-based positions, in ``ranked_ids``, of the positives that occur in it; n is the number of
    positives found in the list (positives outside it are ignored, not counted as misses); 0.0 when none is in
    it. For one positive and ``"market1501"``: 1 at position 1, 1/(2p) at position p > 1, 0 when absent.
    """
    ids = list(ranked_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ranked_ids contains duplicates")
    positives = set(positive_ids)
    positions = [pos for pos, cid in enumerate(ids, start=1) if cid in positives]
    return average_precision(positions, definition)


def query_metrics(
    positive_ranks: Sequence[int],
    top_k: int,
    *,
    ks: Sequence[int] = (1, 5, 10),
    top1pct_k: int | None = None,
) -> dict[str, float]:
    """Every per-query metric (fractions in [0, 1]) from the positives' full-ranking ranks after re-ranking.

    ``top_k`` is the length of the re-ranked list (a gallery smaller than the requested k gives a shorter one):
    a positive of rank <= ``top_k`` is at that position of the list, so the list-based APs follow from the ranks.
    Keys: ``R@<k>`` for each k, ``R@top1%`` when ``top1pct_k`` is given (:func:`top1_percent_k`), ``AP``
    (market1501), ``AP_precision``, ``AP_conservative`` (A.1) and ``AP_topk_market1501``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ranks = _checked_ranks(positive_ranks)
    best = ranks[0] if ranks else None
    out: dict[str, float] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"every K must be >= 1, got {k}")
        out[f"R@{k}"] = 1.0 if best is not None and best <= k else 0.0
    if top1pct_k is not None:
        out["R@top1%"] = 1.0 if best is not None and best <= top1pct_k else 0.0
    precision_ap = _ap_sorted(ranks, "precision")
    in_top = [r for r in ranks if r <= top_k]
    out["AP"] = _ap_sorted(ranks, "market1501")
    out["AP_precision"] = precision_ap
    out["AP_conservative"] = precision_ap if in_top else 0.0
    out["AP_topk_market1501"] = _ap_sorted(in_top, "market1501")
    return out


def summarize(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Means over queries, in percent, of :func:`query_metrics` dicts (same keys, same order)."""
    if not per_query:
        raise ValueError("summarize needs at least one query")
    keys = list(per_query[0])
    n = len(per_query)
    return {m: float(100.0 * sum(q[m] for q in per_query) / n) for m in keys}


def bootstrap_ci(
    values: Sequence[float], *, level: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query ``values`` (fractions), in percent.

    Queries are resampled with replacement ``n_resamples`` times (seeded, so the interval is reproducible); the
    interval is the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the resampled means. Paired differences
    (re-ranked minus retriever, per query) give the interval of an improvement.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // x.size)
    for lo in range(0, n_resamples, chunk):
        hi = min(n_resamples, lo + chunk)
        idx = rng.integers(0, x.size, size=(hi - lo, x.size))
        means[lo:hi] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(100.0 * low), float(100.0 * high)


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


def retrieval_metrics(
    rows: Iterable[Mapping[str, Sequence[int]]],
    ks: Sequence[int] = (1, 5, 10),
    gallery_size: int | None = None,
) -> dict[str, float]:
    """The retriever's Recall@K for each K in ``ks``, both full-ranking APs and (with ``gallery_size``) R@top1%.

    Each row is a mapping with the ``positive_ranks`` column (1-based full-ranking ranks, e.g. a row of
    ``skyrank.mining.mine`` or of a loaded retriever config). Keys, in percent: ``"R@<k>"`` for each k,
    ``"R@top1%"`` when ``gallery_size`` is given, ``"AP"`` (market1501) and ``"AP_precision"``. Queries without
    positives count in the denominator with 0.
    """
    ks = tuple(int(k) for k in ks)
    top1pct = top1_percent_k(gallery_size) if gallery_size is not None else None
    per_query = []
    for row in rows:
        q = query_metrics(row[POSITIVE_RANKS_COLUMN], 1, ks=ks, top1pct_k=top1pct)
        per_query.append({k: v for k, v in q.items() if k.startswith("R@") or k in ("AP", "AP_precision")})
    if not per_query:
        raise ValueError("retrieval_metrics needs at least one row")
    return summarize(per_query)


# ------------------------------------------------------------------------------------------------------------
# Each benchmark's own evaluator (issue 20; notes/benchmarks-more.md sections 0-5). Every protocol below names the
# original evaluator it reproduces; evaluation reads the protocol from the dataset's manifest
# ("evaluation_protocol"), falling back to the benchmark's name, then to the University-1652 columns above.
# ------------------------------------------------------------------------------------------------------------

#: The three incompatible R@1% conventions (notes/benchmarks-more.md section 0), with N the gallery size and r the
#: 0-based rank of the first positive (the number of references scoring strictly higher).
TOP1_PERCENT_DEFINITIONS: dict[str, str] = {
    "floor": (
        "Sample4Geo / TransGeo 'Recall@top1': hit if r < N // 100 (sample4geo/evaluate/cvusa_and_cvact.py and "
        "vigor.py:calculate_scores, topk.append(R//100), ranking < k), i.e. Recall@(N // 100); 0 for N < 100"
    ),
    "int+1": (
        "VIGOR train_SAFA.py:validate_top, SAFA test_cvusa.py, OriCNN: hit if r < int(0.01 N) + 1, i.e. "
        "Recall@(int(0.01 N) + 1), capped at N"
    ),
    "cmc": (
        "University-1652 / DenseUAV evaluate_gpu.py, VICI src/eval.py 'Recall@top1': CMC[round(0.01 N)] in 0-based "
        "indexing (Python round, half to even), i.e. Recall@(round(0.01 N) + 1), capped at N"
    ),
}


def top1_percent_k_for(gallery_size: int, definition: str = "cmc") -> int:
    """The K of R@1% under ``definition`` (:data:`TOP1_PERCENT_DEFINITIONS`): a query hits when its best positive's
    1-based rank is <= K. ``"floor"``: ``N // 100`` (0 below 100 images: nobody hits, as in Sample4Geo);
    ``"int+1"``: ``int(0.01 N) + 1``; ``"cmc"``: ``round(0.01 N) + 1`` (:func:`top1_percent_k`); both capped at N.

    Worked: N = 8,884 gives 88 / 89 / 90; N = 90,618 gives 906 / 907 / 907; N = 951 gives 9 / 10 / 11.
    """
    if isinstance(gallery_size, bool) or int(gallery_size) < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size!r}")
    n = int(gallery_size)
    if definition == "floor":
        return n // 100
    if definition == "int+1":
        return min(n, int(n * 0.01) + 1)
    if definition == "cmc":
        return top1_percent_k(n)
    raise ValueError(f"R@1% definition must be one of {', '.join(TOP1_PERCENT_DEFINITIONS)}, got {definition!r}")


def vigor_hit(similarity: np.ndarray, positive: int, semi_positives: Sequence[int]) -> bool:
    """VIGOR's hit of one query, with the original code's strictness (Sample4Geo
    ``sample4geo/evaluate/vigor.py:calculate_scores``; VIGOR ``train_SAFA.py:validate_top``).

    ``similarity`` is the query's ``(N,)`` similarity to every reference; ``positive`` the positive's index and
    ``semi_positives`` its semi-positives' indices. The code masks the semi-positives out of "references scoring
    strictly higher than the positive" and counts a hit when none is left: nothing but semi-positives may score
    above the positive (ties go to the query). A semi-positive ranked first with a negative before the positive is
    a miss, although the paper's prose ("the top-1 covers the query") would count it.
    """
    sim = np.asarray(similarity, dtype=np.float64).reshape(-1)
    higher = sim > sim[int(positive)]
    higher[np.asarray(list(semi_positives), dtype=np.int64)] = False
    return not bool(higher.any())


def vigor_hit_from_ranking(ranked_ids: Sequence[str], positive_rank: int, semi_positive_ids: Iterable[str]) -> float:
    """:func:`vigor_hit` from a ranking: 1.0 when every reference ranked above the positive (1-based
    ``positive_rank`` in the full, possibly re-ranked, ranking ``ranked_ids``) is a semi-positive, else 0.0.

    With SkyRank's tie rule (a positive ahead of equal-scoring negatives) the references ranked above the positive
    are exactly those scoring strictly higher, so this equals the evaluator's count. ``ranked_ids`` needs only the
    first ``positive_rank - 1`` entries; a positive ranked below more references than there are semi-positives is
    a miss whatever they are.
    """
    semi = {str(s) for s in semi_positive_ids}
    above = int(positive_rank) - 1
    if above < 0:
        raise ValueError(f"positive_rank is 1-based, got {positive_rank}")
    if above > len(semi):
        return 0.0
    ids = [str(i) for i in list(ranked_ids)[:above]]
    if len(ids) < above:
        raise ValueError(f"the ranking holds {len(ids)} ids, fewer than the {above} ranked above the positive")
    return 1.0 if all(i in semi for i in ids) else 0.0


def vigor_scores(
    similarity: np.ndarray,
    positives: Sequence[int],
    semi_positives: Sequence[Sequence[int]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """What Sample4Geo's VIGOR evaluator prints, in percent, from a ``(Q, N)`` similarity matrix
    (``sample4geo/evaluate/vigor.py:calculate_scores``): ``R@<k>`` for each k and ``R@top1%`` count the positive
    only (rank = references strictly more similar than it, hit if rank < k; R@1% with ``N // 100``, the
    ``"floor"`` definition), and ``Hit_Rate`` is :func:`vigor_hit`. The reference implementation the ranking-based
    evaluation (:func:`protocol_query_metrics`) is tested against.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or len(positives) != sim.shape[0] or len(semi_positives) != sim.shape[0]:
        raise ValueError("similarity must be (Q, N) with one positive and one semi-positive list per query")
    q, n = sim.shape
    cutoffs = [int(k) for k in ks] + [n // 100]
    hits = np.zeros(len(cutoffs))
    hit_rate = 0.0
    for i in range(q):
        rank0 = int((sim[i] > sim[i, int(positives[i])]).sum())
        hits += [rank0 < k for k in cutoffs]
        hit_rate += vigor_hit(sim[i], int(positives[i]), semi_positives[i])
    out = {f"R@{k}": float(100.0 * h / q) for k, h in zip(ks, hits[:-1], strict=True)}
    out["R@top1%"] = float(100.0 * hits[-1] / q)
    out["Hit_Rate"] = float(100.0 * hit_rate / q)
    return out


#: DenseUAV's SDM scale: s_i = exp(-SDM_SCALE * d_i), d_i in degrees (evaluateDistance.py, hard-coded 5e3).
SDM_SCALE = 5000.0
#: The SDM@K values DenseUAV's evaluateDistance.py prints (``--K 1 3 5 10``).
SDM_KS: tuple[int, ...] = (1, 3, 5, 10)


def sdm_at_k(query_lonlat: Sequence[float], ranked_lonlat: np.ndarray, k: int) -> float:
    """DenseUAV's SDM@K of one query (``evaluateDistance.py:evaluate_SDM``/``evaluateSingle``), in [0, 1].

    ``query_lonlat`` is ``(longitude, latitude)`` of the query's location and ``ranked_lonlat`` ``(>= K, 2)`` the
    ``(longitude, latitude)`` of the top-ranked gallery images' locations, in rank order: **longitude first**, as
    ``Dense_GPS_ALL.txt`` writes them (``E<lon> N<lat>``). d_i is the Euclidean distance in raw degrees (computed in
    float32, as the original's ``np.float32`` arrays), s_i = exp(-5000 d_i), w_i = 1 - (i-1)/K, and
    SDM@K = sum_i w_i s_i / sum_i w_i. A gallery image of the query's own location scores 1.
    """
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = np.asarray(ranked_lonlat, dtype=np.float32).reshape(-1, 2)
    if ranked.shape[0] < k:
        raise ValueError(f"SDM@{k} needs the top {k} gallery positions, got {ranked.shape[0]}")
    diff = ranked[:k] - np.asarray(query_lonlat, dtype=np.float32).reshape(1, 2)
    distance = np.sqrt((diff * diff).sum(axis=1, dtype=np.float32))
    weight = 1.0 - np.arange(k, dtype=np.float64) / k
    similarity = np.exp(-SDM_SCALE * distance.astype(np.float64))
    return float((weight * similarity).sum() / weight.sum())


#: The earth radius of DenseUAV's ``evaluateDistance.py:latlog2meter``, in metres (6378.137 km).
EARTH_RADIUS_M = 6_378_137.0
#: The MA@m thresholds in metres the evaluation reports (DenseUAV's ``evaluateDistance.py`` saves m = 1..100).
MA_METRES: tuple[int, ...] = (5, 10, 20)


def haversine_m(a_lonlat: Sequence[float], b_lonlat: Sequence[float]) -> float:
    """The great-circle distance in metres between two ``(longitude, latitude)`` points in degrees: the haversine
    formula with R = 6378.137 km, as DenseUAV's ``latlog2meter``:

        d = 2 R asin(sqrt(sin²(Δφ/2) + cos φ_a cos φ_b sin²(Δλ/2)))
    """
    lon_a, lat_a, lon_b, lat_b = (math.radians(float(v)) for v in (*a_lonlat, *b_lonlat))
    h = math.sin((lat_a - lat_b) / 2) ** 2 + math.cos(lat_a) * math.cos(lat_b) * math.sin((lon_a - lon_b) / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def ma_at_m(query_lonlat: Sequence[float], top1_lonlat: Sequence[float], metres: float) -> float:
    """DenseUAV's MA@m of one query (``evaluateDistance.py:evaluate_MA``): 1.0 when the top-1 gallery image's
    location is **strictly** closer than ``metres`` to the query's (:func:`haversine_m`), else 0.0."""
    if metres <= 0:
        raise ValueError(f"MA@m needs m > 0 metres, got {metres}")
    return float(haversine_m(query_lonlat, top1_lonlat) < metres)


#: The CVACT test rule's radius in metres (OriCNN ``CVPR2019_codes/Matlab/RecallGeo.m``: ``L2_dis <= 5``).
CVACT_RADIUS_M = 5.0


def positives_within_radius(
    query_utm: np.ndarray, gallery_utm: np.ndarray | None = None, radius_m: float = CVACT_RADIUS_M
) -> list[np.ndarray]:
    """The CVACT test rule (OriCNN ``RecallGeo.m``): gallery tile j is a positive of query i when the Euclidean
    distance between their UTM positions (metres; ``ACT_data.mat`` ``utm``, rows of ``valSetAll.valInd``) is
    **<= radius_m** (5 m). Returns, per query, the sorted ``int64`` gallery indices within the radius (a query's own
    tile, at distance 0, is among them). ``gallery_utm=None``: the queries' own positions (CVACT test pairs query i
    with tile i, so both share ``utm(valSetAll.valInd, :)``).

    Exact and memory-bounded: the gallery is sorted by easting and each query compares only the tiles whose
    easting is within the radius (92,802 x 92,802 never materialises).
    """
    q = np.asarray(query_utm, dtype=np.float64)
    g = q if gallery_utm is None else np.asarray(gallery_utm, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 2 or g.ndim != 2 or g.shape[1] != 2:
        raise ValueError(f"UTM positions must be (N, 2) arrays, got {q.shape} and {g.shape}")
    if not (np.isfinite(q).all() and np.isfinite(g).all()):
        raise ValueError("UTM positions must be finite")
    radius = float(radius_m)
    order = np.argsort(g[:, 0], kind="stable")
    east = g[order, 0]
    lo = np.searchsorted(east, q[:, 0] - radius, side="left")
    hi = np.searchsorted(east, q[:, 0] + radius, side="right")
    out: list[np.ndarray] = []
    for i in range(q.shape[0]):
        cand = order[lo[i] : hi[i]]
        d = g[cand] - q[i]
        within = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2) <= radius
        out.append(np.sort(cand[within]).astype(np.int64))
    return out


@dataclass(frozen=True)
class EvaluationProtocol:
    """One benchmark's evaluator: which R@1%, whether AP is reported, which extra metrics, which table columns.

    Attributes:
        name: the key a benchmark declares (``Benchmark.evaluation_protocol``) and the manifest records.
        top1_percent: the R@1% definition (:data:`TOP1_PERCENT_DEFINITIONS`).
        ap: the original evaluator reports AP (its AP columns then follow ``--ap``).
        extra: metrics beyond R@K / R@1% / AP (``Hit_Rate``, ``SDM@K``, ``MA@<m>m``), computed by
            :func:`protocol_query_metrics`.
        table: the columns ``skyrank table`` shows by default for this benchmark.
        evaluator: the original code (file and rule) whose numbers the protocol reproduces.
    """

    name: str
    top1_percent: str
    ap: bool
    extra: tuple[str, ...]
    table: tuple[str, ...]
    evaluator: str

    @property
    def needs_semi_positives(self) -> bool:
        return "Hit_Rate" in self.extra

    @property
    def needs_coordinates(self) -> bool:
        return any(m.startswith(("SDM@", "MA@")) for m in self.extra)


_SDM_COLUMNS = tuple(f"SDM@{k}" for k in SDM_KS)
_MA_COLUMNS = tuple(f"MA@{m}m" for m in MA_METRES)

#: Every registered protocol (issue 20), by name.
PROTOCOLS: dict[str, EvaluationProtocol] = {
    p.name: p
    for p in (
        EvaluationProtocol("university1652", "cmc", True, (), ("R@1", "AP"),
                           "layumi/University1652-Baseline evaluate_gpu.py (CMC, trapezoid AP)"),
        EvaluationProtocol("sues200", "cmc", True, (), ("R@1", "AP"),
                           "Reza-Zhu/SUES-200-Benchmark test_and_evaluate.py (University-1652's evaluate_gpu.py)"),
        EvaluationProtocol("vigor", "floor", False, ("Hit_Rate",), ("R@1", "R@5", "R@10", "R@top1%", "Hit_Rate"),
                           "Skyy93/Sample4Geo sample4geo/evaluate/vigor.py:calculate_scores (positive-only R@K, "
                           "R@1% = R@(N//100), masked hit rate)"),
        EvaluationProtocol("cvusa", "floor", False, (), ("R@1", "R@5", "R@10", "R@top1%"),
                           "Skyy93/Sample4Geo sample4geo/evaluate/cvusa_and_cvact.py:calculate_scores"),
        EvaluationProtocol("cvact", "floor", False, (), ("R@1", "R@5", "R@10", "R@top1%"),
                           "Skyy93/Sample4Geo sample4geo/evaluate/cvusa_and_cvact.py:calculate_scores (test "
                           "positives: OriCNN RecallGeo.m, any tile within 5 m, when the build stored them)"),
        EvaluationProtocol("denseuav", "cmc", True, _SDM_COLUMNS + _MA_COLUMNS, ("R@1", "R@5", "SDM@1"),
                           "Dmmm1997/DenseUAV evaluate_gpu.py (University-1652 CMC and AP) and "
                           "evaluateDistance.py:evaluate_SDM (SDM@K, lon/lat degrees) and evaluate_MA (MA@m, "
                           "haversine metres)"),
        EvaluationProtocol("university1652-street", "cmc", True, (), ("R@1", "R@5", "R@10", "AP"),
                           "layumi/University1652-Baseline evaluate_gpu.py with query_street/gallery_satellite"),
    )
}  # fmt: skip


def get_protocol(name: str) -> EvaluationProtocol:
    """The registered :class:`EvaluationProtocol` ``name``; ``ValueError`` listing the names otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def resolve_protocol(build_params: Mapping[str, object], *, strict: bool = False) -> EvaluationProtocol | None:
    """The protocol of a dataset from its manifest's build parameters: the ``evaluation_protocol`` key, else the
    benchmark's name when a protocol has it, else ``None`` (a folder built before issue 20, or a benchmark without
    its own evaluator such as ``synthetic``: the University-1652 columns above). A recorded name no protocol has is
    passed over (``strict=True``: ``ValueError``)."""
    name = build_params.get("evaluation_protocol")
    if name and (strict or str(name) in PROTOCOLS):
        return get_protocol(str(name))
    for key in ("benchmark", "dataset"):
        bench = build_params.get(key)
        if isinstance(bench, str) and bench in PROTOCOLS:
            return PROTOCOLS[bench]
    return None


def protocol_query_metrics(
    protocol: EvaluationProtocol,
    *,
    ranked_ids: Sequence[str],
    positive_ranks: Sequence[int],
    semi_positive_ids: Iterable[str] = (),
    query_lonlat: Sequence[float] | None = None,
    lonlat: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float]:
    """The protocol's extra per-query metrics (fractions) from the (re-ranked) ranking.

    ``ranked_ids`` is the full ranking as far as it is known (the retriever's ``retrieved_ids`` with the top-k
    permuted), ``positive_ranks`` the positives' 1-based ranks in it. ``Hit_Rate``:
    :func:`vigor_hit_from_ranking` of the best-ranked positive (0 when the query has none). ``SDM@K``:
    :func:`sdm_at_k` of the first K ids, located through ``lonlat`` (id -> (longitude, latitude)), the query at
    ``query_lonlat``. ``MA@<m>m``: :func:`ma_at_m` of the first id, located the same way.
    """
    out: dict[str, float] = {}
    ranks = _checked_ranks(positive_ranks)
    for name in protocol.extra:
        if name == "Hit_Rate":
            out[name] = vigor_hit_from_ranking(ranked_ids, ranks[0], semi_positive_ids) if ranks else 0.0
        elif name.startswith("SDM@"):
            if query_lonlat is None or lonlat is None:
                raise ValueError(f"{name} needs the query's and the gallery's (longitude, latitude)")
            k = int(name[4:])
            ids = [str(i) for i in list(ranked_ids)[:k]]
            out[name] = sdm_at_k(query_lonlat, np.array([lonlat[i] for i in ids], dtype=np.float64), k)
        elif name.startswith("MA@") and name.endswith("m"):
            if query_lonlat is None or lonlat is None:
                raise ValueError(f"{name} needs the query's and the gallery's (longitude, latitude)")
            out[name] = ma_at_m(query_lonlat, lonlat[str(list(ranked_ids)[0])], float(name[3:-1]))
        else:  # pragma: no cover - guarded by the PROTOCOLS table
            raise ValueError(f"no rule for the metric {name!r}")
    return out


METRIC_DEFINITIONS.update(
    {
        "Hit_Rate": (
            "VIGOR hit rate (Sample4Geo vigor.py:calculate_scores): percent of queries where no reference other than "
            "the positive's 3 semi-positives scores strictly above the positive (after re-ranking: ranks above it)"
        ),
        **{
            f"SDM@{k}": (
                f"DenseUAV SDM@{k} (evaluateDistance.py): sum_i w_i exp(-5000 d_i) / sum_i w_i over the top {k}, "
                f"w_i = 1 - (i-1)/{k}, d_i the Euclidean distance in degrees between (lon, lat) of the query's and "
                "the i-th image's locations; percent"
            )
            for k in SDM_KS
        },
        **{
            f"MA@{m}m": (
                f"DenseUAV MA@{m} (evaluateDistance.py:evaluate_MA): percent of queries whose top-1 gallery image's "
                f"location is strictly closer than {m} m to the query's (haversine, R = 6378.137 km)"
            )
            for m in MA_METRES
        },
    }
)
