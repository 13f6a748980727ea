"""Mining SkyRank rows from retriever embeddings: exact search, full ranks, the swap rule and soft labels.

Implements, from the SkyLink paper (arXiv 2603.08063):

* **Eq. 1** (retrieval): score(q, r) = <E_q(q), E_r(r)>, the inner product of L2-normalised embeddings (cosine
  similarity), top-m by exact search with faiss ``IndexFlatIP`` (:func:`skyrank.index.search_topk`).
* **Eq. 2** (ground-truth swap rule): if the ground truth is among the top-m, drop it, otherwise drop the m-th
  candidate, so that m-1 hard negatives remain (:func:`skyrank.format.rules.apply_swap_rule`). Generalised to
  several positives (satellite->drone has 54 per query): drop every positive and keep the first m-1 negatives of
  the ranking, topping up from beyond rank m when more than one positive was in the top-m. For one positive this
  is exactly Eq. 2 (both branches leave the first m-1 negatives). The stored ground truth is the best-ranked
  positive.
* **Eq. 6** (relational similarity): sim_j = cos(E_r(c_j), E_r(gt)) in the retriever's reference space
  (:func:`skyrank.format.rules.soft_label_similarity`), and **Eq. 7** (soft labels): L_j = sim_j if sim_j > T else 0
  (:func:`skyrank.format.rules.soft_labels`; the trainer adds the ground truth's label 1).

Every rule is a function of :mod:`skyrank.format.rules` that :func:`mine` calls; this module only organises
the search and the bookkeeping around them.

Conventions (every rank and list in a mined row obeys them):

* **Scores** are float32 inner products. :func:`search_topk` returns faiss's scores. :func:`mine` and
  :func:`full_ranks` compute each query's score row once with a float32 numpy matmul against the whole gallery
  (in query chunks, so memory stays bounded) and derive *everything* in that query's row from it: the stored
  scores, the order of the lists and the ranks. In exact mode :func:`mine` reads each query's candidate pool
  off that score row (a partial sort, no second search); an approximate index (:mod:`skyrank.index`) proposes
  it otherwise. An exact pool is re-sorted with the numpy scores and checked to contain every reference
  scoring at least its boundary score (a row failing the check, which needs a tie at the boundary, is ranked
  from its full score row instead).
* **Ties, label-free** (:func:`search_topk`): equal scores are ordered by ascending gallery index, also at the
  k boundary: the k returned are exactly the first k of the gallery sorted by (-score, gallery index).
* **Ties, with labels** (:func:`full_ranks`, :func:`mine`): the optimistic rule. The full ranking is the
  gallery sorted by (-score, negative-before-positive flag, gallery index): a positive comes before every
  negative with the same score, positives with equal scores by ascending gallery index, negatives likewise. So
  the 1-based rank of a positive p is ``1 + #{refs scoring strictly higher than p} + #{positives with the same
  score and a smaller gallery index}``; ranks are distinct, and ``retrieved_ids[gt_rank - 1] == gt_id``
  whenever ``gt_rank <= m``. With real-valued features ties are rare (notes/retrievers.md section 9).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from skyrank.format import rules
from skyrank.format.rules import apply_swap_rule, soft_label_similarity, soft_labels
from skyrank.format.schema import RETRIEVER_COLUMNS
from skyrank.index import search_topk

if TYPE_CHECKING:
    from skyrank.index import SearchIndex

# The rules live in skyrank.format.rules and the exact faiss search in skyrank.index; these names are re-exported
# for callers that imported them from here.
__all__ = ["MinedRow", "apply_swap_rule", "full_ranks", "mine", "search_topk", "soft_label_similarity", "soft_labels"]

#: float32 elements of one block of scores held at once: 128 MiB.
_BLOCK_ELEMENTS = 1 << 25
#: Extra neighbours fetched beyond what is needed, so boundary ties rarely force a second search.
_MARGIN = 8


class MinedRow(NamedTuple):
    """One row of a ``<retriever>-<bench>-<direction>`` config; field names are the schema's columns."""

    query_id: str
    label: str
    gt_id: str
    gt_rank: int
    gt_score: float
    positive_ids: list[str]
    positive_ranks: list[int]
    candidate_ids: list[str]
    candidate_scores: list[float]
    candidate_gt_similarity: list[float]
    retrieved_ids: list[str]
    retrieved_scores: list[float]


if MinedRow._fields != RETRIEVER_COLUMNS:  # pragma: no cover - guards against schema drift
    raise ImportError(f"skyrank.mining.MinedRow fields {MinedRow._fields} differ from {RETRIEVER_COLUMNS}")


# --------------------------------------------------------------------------------------------------- helpers


def _chunk_rows(n_refs: int, chunk: int | None) -> int:
    if chunk is not None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return int(chunk)
    return max(1, min(4096, _BLOCK_ELEMENTS // max(1, n_refs)))


def _top_unsorted(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` largest entries of each row, in no particular order (ties at the k-th: any of them).

    ``torch.topk`` (multi-threaded; about 3x faster than ``np.argpartition`` on rows of a million scores)."""
    import torch

    if k >= scores.shape[1]:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return torch.from_numpy(scores).topk(k, dim=1, sorted=False).indices.numpy()


def _ranked_prefix(row: np.ndarray, pool: np.ndarray, pos: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``length`` gallery indices of the full ranking (-score, negative flag, index) of one query.

    ``pool`` is a candidate set (faiss's top list, distinct indices); it is completed with the positives,
    re-scored with ``row`` and used if it provably holds the prefix (it contains every reference scoring at
    least the prefix's last score); otherwise the whole row is sorted. Returns the prefix and its
    is-positive mask.
    """
    pool = pool[pool >= 0]
    match = pos[:, None] == pool[None, :]
    pool = np.concatenate([pool, pos[~match.any(axis=1)]])
    is_pos = np.concatenate([match.any(axis=0), np.ones(pool.size - match.shape[1], dtype=bool)])
    if pool.size >= length:
        ps = row[pool]
        order = rules.ranking_order(ps, pool, is_pos)[:length]
        boundary = ps[order[-1]]
        if np.count_nonzero(row >= boundary) == np.count_nonzero(ps >= boundary):
            return pool[order], is_pos[order]
    negative = np.ones(row.size, dtype=bool)
    negative[pos] = False
    order = rules.ranking_order(row, np.arange(row.size), ~negative)[:length]
    return order, ~negative[order]


def _pool_subset(pool: np.ndarray, pos: np.ndarray, m: int) -> np.ndarray | None:
    """The pool's distinct gallery indices (sorted) when its pool-first ranking needs no score outside it.

    That holds when the pool contains every positive, at least m references and at least m-1 negatives; then
    the row of :func:`_approx_ranking` is fully determined by the pool's scores. None otherwise.
    """
    sub = np.unique(pool[pool >= 0])
    if sub.size < m:
        return None
    found = np.searchsorted(sub, pos)
    if np.any(found >= sub.size) or np.any(sub[np.minimum(found, sub.size - 1)] != pos):
        return None
    return sub if sub.size - pos.size >= m - 1 else None


def _approx_ranking(
    row: np.ndarray, pool: np.ndarray, pos: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One query's row under an approximate index: the pool-first ranking (see :func:`mine`).

    The ranking is the approximate index's pool (its top-K, ``-1`` slots dropped) sorted by (-score, negative
    flag, gallery index) with the exact float32 scores ``row``, followed by every other reference in the same
    order. Returns ``(retrieved (m,), negatives (m-1,), positives sorted by rank, their 1-based ranks)``.
    """
    pool = pool[pool >= 0]
    _, first = np.unique(pool, return_index=True)
    pool = pool[np.sort(first)]
    pool_is_pos = np.isin(pool, pos)
    pool_scores = row[pool]
    order = rules.ranking_order(pool_scores, pool, pool_is_pos)
    ranked, ranked_is_pos = pool[order], pool_is_pos[order]
    k = pool.size
    if k < m or np.count_nonzero(~ranked_is_pos) < m - 1:
        # The pool is too short: continue with the rest of the gallery in exact order (rare: IVF -1 slots).
        rest = np.ones(row.size, dtype=bool)
        rest[pool] = False
        rest_idx = np.flatnonzero(rest)
        rest_neg = ~np.isin(rest_idx, pos)
        rest_order = rules.ranking_order(row[rest_idx], rest_idx, ~rest_neg)[: m + pos.size]
        ranked = np.concatenate([ranked, rest_idx[rest_order]])
        ranked_is_pos = np.concatenate([ranked_is_pos, ~rest_neg[rest_order]])
    # Ranks: positives in the pool by their position there; the others after the pool, by the optimistic rule
    # among the references outside the pool.
    in_pool = np.isin(pos, pool)
    ranks = np.empty(pos.size, dtype=np.int64)
    position = np.flatnonzero(ranked_is_pos[:k]) + 1
    pool_pos = ranked[:k][ranked_is_pos[:k]]
    lookup = dict(zip(pool_pos.tolist(), position.tolist(), strict=True))
    ranks[in_pool] = [lookup[p] for p in pos[in_pool].tolist()]
    out = pos[~in_pool]
    if out.size:
        s = row[out]
        above_outside = rules.count_strictly_greater(row, s) - (pool_scores[None, :] > s[:, None]).sum(axis=1)
        ranks[~in_pool] = k + 1 + above_outside + rules.tied_positives_before(s, out)
    by_rank = np.argsort(ranks)
    return ranked[:m], ranked[rules.swap_rule_positions(ranked_is_pos, m)], pos[by_rank], ranks[by_rank]


# --------------------------------------------------------------------------------------------------- public


def full_ranks(
    query_emb: np.ndarray,
    ref_emb: np.ndarray,
    positive_index_lists: Sequence[Sequence[int]],
    *,
    chunk: int | None = None,
) -> list[np.ndarray]:
    """1-based rank of every positive in each query's full ranking of the gallery (int64 arrays).

    Rank of positive p = 1 + #{references scoring strictly higher} + #{positives with the same score and a
    smaller gallery index} (optimistic tie rule, module docstring). Scores are float32 numpy inner products
    computed ``chunk`` queries at a time (default: a block of about 128 MiB). The result is aligned with
    ``positive_index_lists`` (one array per query, ranks in the order the indices were given).
    """
    q, r = rules.check_pair(query_emb, ref_emb)
    if len(positive_index_lists) != q.shape[0]:
        raise ValueError(f"{len(positive_index_lists)} positive lists for {q.shape[0]} queries")
    lists: list[np.ndarray] = []
    for qi, pos in enumerate(positive_index_lists):
        arr = np.asarray(list(pos), dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= r.shape[0]):
            raise ValueError(f"query {qi}: positive index out of range [0, {r.shape[0]})")
        if np.unique(arr).size != arr.size:
            raise ValueError(f"query {qi}: duplicate positive indices")
        lists.append(arr)
    rows_per_chunk = _chunk_rows(r.shape[0], chunk)
    out: list[np.ndarray] = []
    for start in range(0, q.shape[0], rows_per_chunk):
        scores = q[start : start + rows_per_chunk] @ r.T
        for j, row in enumerate(scores):
            pos = lists[start + j]
            out.append(rules.positive_ranks(row, pos) if pos.size else np.zeros(0, dtype=np.int64))
    return out


def _query_positives(
    q_ids: list[str],
    q_labels: list[str],
    by_label: dict[str, np.ndarray],
    g_ids: list[str],
    query_positives: Sequence[Sequence[str] | None] | None,
) -> list[np.ndarray]:
    """Each query's positives as sorted gallery indices: its label's images, or its explicit ids."""
    index = {gid: i for i, gid in enumerate(g_ids)} if query_positives is not None else {}
    out: list[np.ndarray] = []
    missing: list[str] = []
    for qi, (qid, lab) in enumerate(zip(q_ids, q_labels, strict=True)):
        explicit = None if query_positives is None else query_positives[qi]
        if explicit is None:
            pos = by_label.get(lab)
            if pos is None:
                missing.append(f"{qid!r} (label {lab!r})")
                pos = np.empty(0, dtype=np.int64)
        else:
            unknown = [x for x in explicit if x not in index]
            if unknown or not explicit:
                missing.append(f"{qid!r} (positives {list(explicit)[:3]!r} not in the gallery)")
            pos = np.asarray(sorted(index[x] for x in explicit if x in index), dtype=np.int64)
        out.append(pos)
    if missing:
        raise ValueError(f"{len(missing)} queries have no positive in the gallery, e.g. {', '.join(missing[:5])}")
    return out


def mine(
    query_ids: Sequence[str],
    query_labels: Sequence[str],
    query_emb: np.ndarray,
    gallery_ids: Sequence[str],
    gallery_labels: Sequence[str],
    gallery_emb: np.ndarray,
    m: int = 20,
    *,
    use_gpu: bool | None = None,
    progress: bool = False,
    index: str | SearchIndex = "exact",
    index_params: Mapping[str, Any] | None = None,
    return_info: bool = False,
    recall_sample: int = 1000,
    query_positives: Sequence[Sequence[str] | None] | None = None,
    query_semi_positives: Sequence[Sequence[str]] | None = None,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mine one SkyRank row per query (SkyLink Eq. 1, 2, 6), sorted by ``query_id``.

    Each dict has exactly the keys ``schema.RETRIEVER_COLUMNS`` (built from :class:`MinedRow`); positives are
    the gallery images whose label equals the query's. Values: ids and label ``str``; ranks ``int``; scores
    and similarities python floats (float32 values). ``positive_ids``/``positive_ranks``: every positive in
    full-ranking order with its 1-based full rank; ``gt_id`` is the best-ranked positive, ``gt_rank`` and
    ``gt_score`` its rank and score; ``retrieved_ids``/``retrieved_scores``: the raw top-m;
    ``candidate_ids``/``candidate_scores``: the m-1 hard negatives of the swap rule (the first m-1 negatives
    of the ranking, :func:`apply_swap_rule`); ``candidate_gt_similarity``: Eq. 6 for each candidate.
    Scores, orders and ranks follow the module docstring (numpy float32 scores, optimistic ties).

    ``index``: ``"exact"`` (default, the paper's setting), ``"ivf"`` or ``"hnsw"`` (built with
    :func:`skyrank.index.build_index` from ``use_gpu`` and ``index_params``), or a prebuilt
    :class:`skyrank.index.SearchIndex` over ``gallery_emb``; ``use_gpu`` only applies to such an index (exact
    mining reads its candidates off the numpy score rows it computes anyway). With an approximate index the
    approximate search only proposes each query's pool, its top-K (K = m + the largest number of positives of any
    query + 8); the row is then defined by the **pool-first ranking**: the pool re-scored with the exact float32
    scores and sorted by the rule above, followed by every other reference in the same order. ``retrieved_ids`` is
    its top-m, ``candidate_ids`` its first m-1 negatives, ``positive_ranks``/``gt_rank`` the positives' positions
    in it. That is the full ranking the approximate retriever stands for (what it returns, completed exactly), so
    every invariant of an exact row holds (``gt_rank <= m`` iff ``gt_id`` is retrieved and then
    ``retrieved_ids[gt_rank - 1] == gt_id``; ``gt_rank == min(positive_ranks)``; ranks strictly increasing and
    consistent with the scores). A positive the index found keeps its exact rank or moves up (references it missed
    are ranked after the pool); a positive it missed is ranked after the pool (rank > K > m), at its exact rank
    among the references outside the pool. A query whose pool holds every positive (and at least m-1 negatives) is
    scored on its pool alone (a matrix-vector product over K references); only the others, whose positives need
    ranks beyond the pool, are scored against the whole gallery (an O(N d) product each, in bounded-memory chunks).
    So the cost of mining with an approximate index grows with the number of queries whose ground truth the index
    misses, not with Q N. When the pool holds the exact top-K, rows equal the exact rows, scores up to float32
    rounding (the two products may round the last bit differently). Tiny galleries fall back to exact search
    (``info["fallback"]``).
    IVF's nprobe and HNSW's efSearch are calibrated for recall@m >= 0.99 on a deterministic sample of
    ``recall_sample`` queries (seed 1; the reported recall uses another sample, seed 0).

    ``return_info=True`` returns ``(rows, info)``: ``info`` is the index's ``info`` dict (kind, parameters,
    fallback, build time) plus ``recall_at_m`` (:func:`skyrank.index.measure_recall` at k = m on a deterministic
    sample of ``recall_sample`` queries; 1.0 for exact search), ``recall_k`` and ``recall_queries``, for the
    dataset card.

    ``query_positives`` (aligned with ``query_ids``): a query's positives as gallery ids where they are not "same
    label" (CVACT test: every tile within 5 m; ``None`` entries keep the label rule). ``query_semi_positives``
    (aligned with ``query_ids``): gallery ids stored unchanged in the optional ``semi_positive_ids`` column
    (VIGOR); they stay ordinary candidates (negatives for the swap rule) with Eq. 7's soft labels.

    Raises ``ValueError`` on mismatched lengths, duplicate ids, a query whose label has no positive in the
    gallery (naming a few), m < 2, m > gallery size, or a query with fewer than m-1 negatives in the gallery.
    """
    from tqdm.auto import tqdm

    from skyrank.index import build_index, measure_recall, sample_queries

    q, g = rules.check_pair(query_emb, gallery_emb)
    n_q, n_g = q.shape[0], g.shape[0]
    if not (len(query_ids) == len(query_labels) == n_q):
        raise ValueError(f"{len(query_ids)} query ids, {len(query_labels)} labels, {n_q} query embeddings")
    if not (len(gallery_ids) == len(gallery_labels) == n_g):
        raise ValueError(f"{len(gallery_ids)} gallery ids, {len(gallery_labels)} labels, {n_g} gallery embeddings")
    q_ids = [str(x) for x in query_ids]
    q_labels = [str(x) for x in query_labels]
    g_ids = [str(x) for x in gallery_ids]
    g_labels = [str(x) for x in gallery_labels]
    for name, ids in (("query_ids", q_ids), ("gallery_ids", g_ids)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name} contains duplicates")
    if int(m) != m or m < 2:
        raise ValueError(f"m must be an integer >= 2, got {m}")
    m = int(m)
    if m > n_g:
        raise ValueError(f"m={m} exceeds the gallery size {n_g}")

    by_label: dict[str, list[int]] = {}
    for gi, label in enumerate(g_labels):
        by_label.setdefault(label, []).append(gi)
    positives = {label: np.asarray(idx, dtype=np.int64) for label, idx in by_label.items()}
    for name, extra in (("query_positives", query_positives), ("query_semi_positives", query_semi_positives)):
        if extra is not None and len(extra) != n_q:
            raise ValueError(f"{name} has {len(extra)} entries for {n_q} queries")
    q_pos = _query_positives(q_ids, q_labels, positives, g_ids, query_positives)
    most = max(p.size for p in q_pos)
    if n_g - most < m - 1:
        raise ValueError(
            f"m={m} needs {m - 1} negatives per query, but a label has {most} of the {n_g} gallery images as "
            f"positives: use m <= {n_g - most + 1}"
        )

    if not isinstance(index, str):  # a prebuilt SearchIndex (or any object with its interface)
        if (index.ntotal, index.dim) != g.shape:
            raise ValueError(f"the index holds {index.ntotal} x {index.dim} references, the gallery is {g.shape}")
        approx = index
    else:
        calib = q[sample_queries(n_q, recall_sample, seed=1)] if index in ("ivf", "hnsw") else None
        if progress and index != "exact":
            tqdm.write(f"building the {index} index over {n_g:,} references and calibrating it on "
                       f"{min(n_q, recall_sample):,} queries (minutes for millions of references)")
        approx = (
            build_index(g, index, use_gpu=use_gpu, params=index_params, calibration_queries=calib, calibration_k=m)
            if index != "exact"
            else None
        )
    if approx is None:
        info = {"kind": "exact", "requested_kind": "exact", "ntotal": n_g, "dim": g.shape[1], "fallback": None}
    else:
        info = dict(approx.info)
        if approx.is_exact:  # kind "exact" or the tiny-gallery fallback
            approx = None
    pool_size = min(n_g, m + most + _MARGIN)
    order = sorted(range(n_q), key=q_ids.__getitem__)
    rows_per_chunk = _chunk_rows(n_g, None)
    # An approximate index searches every query in one call (its own batches; IVF's list-major scan needs many
    # queries per batch to pay off), not chunk by chunk: the pools are small (Q x K ids).
    approx_pools = approx.search(q, pool_size)[1] if approx is not None else None
    # Queries whose pool holds every positive (and enough negatives) only need their pool's scores; the others
    # need the whole gallery's, for the ranks of the positives outside the pool: those are scored first, together
    # in chunks (a handful of rows per chunk would each read the whole gallery for a matrix-vector product).
    subsets: dict[int, np.ndarray | None] = {}
    beyond_pool: dict[int, tuple[np.ndarray, ...]] = {}
    if approx_pools is not None:
        subsets = {qi: _pool_subset(approx_pools[qi], q_pos[qi], m) for qi in order}
        full = [qi for qi in order if subsets[qi] is None]
        with tqdm(total=len(full), disable=not progress or not full, unit="query", desc="ranks beyond the pool") as b:
            for start in range(0, len(full), rows_per_chunk):
                group = full[start : start + rows_per_chunk]
                for qi, row in zip(group, q[group] @ g.T, strict=True):
                    ret_i, neg_i, pos_i, ranks = _approx_ranking(row, approx_pools[qi], q_pos[qi], m)
                    beyond_pool[qi] = (ret_i, neg_i, pos_i, ranks, row[pos_i[0]], row[ret_i], row[neg_i])
                b.update(len(group))
        rows_per_chunk = max(rows_per_chunk, 4096)  # the loop below no longer touches the whole gallery
    out: list[dict[str, Any]] = []
    with tqdm(total=n_q, disable=not progress, unit="query", desc="mining") as bar:
        for start in range(0, n_q, rows_per_chunk):
            chunk = order[start : start + rows_per_chunk]
            pos_lists = [q_pos[qi] for qi in chunk]
            qc = q[chunk]
            if approx is None:
                scores = qc @ g.T  # the one place this chunk's scores are computed
                # Exact search: the candidate pool is read off the score matrix computed above (one product,
                # not a second faiss search); _ranked_prefix checks that it holds the prefix, ties included.
                fetch = min(n_g, m + max(p.size for p in pos_lists) + _MARGIN)
                pools = _top_unsorted(scores, fetch)
            cand_idx = np.empty((len(chunk), m - 1), dtype=np.int64)
            gt_idx = np.empty(len(chunk), dtype=np.int64)
            partial: list[tuple[Any, ...]] = []
            for j, qi in enumerate(chunk):
                pos, sub = pos_lists[j], subsets.get(qi)
                if sub is not None:  # the pool's scores only, in local indices 0..len(sub)-1 (order-preserving)
                    local = g[sub] @ qc[j]
                    r_loc, n_loc, p_loc, ranks_sorted = _approx_ranking(
                        local, np.arange(sub.size), np.searchsorted(sub, pos), m
                    )
                    retrieved, negatives, pos_sorted = sub[r_loc], sub[n_loc], sub[p_loc]
                    gt_score, ret_scores, neg_scores = local[p_loc[0]], local[r_loc], local[n_loc]
                elif qi in beyond_pool:  # scored against the whole gallery above
                    (retrieved, negatives, pos_sorted, ranks_sorted, gt_score, ret_scores,
                     neg_scores) = beyond_pool.pop(qi)
                else:  # exact search
                    row = scores[j]
                    ranks = rules.positive_ranks(row, pos)
                    by_rank = np.argsort(ranks)
                    pos_sorted, ranks_sorted = pos[by_rank], ranks[by_rank]
                    prefix, prefix_is_pos = _ranked_prefix(row, pools[j], pos, m - 1 + pos.size)
                    negatives = prefix[rules.swap_rule_positions(prefix_is_pos, m)]  # Eq. 2
                    retrieved = prefix[:m]
                    gt_score, ret_scores, neg_scores = row[pos_sorted[0]], row[retrieved], row[negatives]
                cand_idx[j] = negatives
                gt_idx[j] = pos_sorted[0]
                partial.append((qi, gt_score, pos_sorted, ranks_sorted, negatives, neg_scores, retrieved, ret_scores))
            sims = rules.soft_label_similarity(cand_idx, gt_idx, g, check=False)  # Eq. 6; g was validated above
            for j, (qi, gt_score, pos_sorted, ranks_sorted, negatives, neg_scores, retrieved, ret_scores) in (
                enumerate(partial)
            ):
                record = MinedRow(
                    query_id=q_ids[qi],
                    label=q_labels[qi],
                    gt_id=g_ids[int(pos_sorted[0])],
                    gt_rank=int(ranks_sorted[0]),
                    gt_score=float(gt_score),
                    positive_ids=[g_ids[i] for i in pos_sorted.tolist()],
                    positive_ranks=ranks_sorted.tolist(),
                    candidate_ids=[g_ids[i] for i in negatives.tolist()],
                    candidate_scores=neg_scores.tolist(),
                    candidate_gt_similarity=sims[j].tolist(),
                    retrieved_ids=[g_ids[i] for i in retrieved.tolist()],
                    retrieved_scores=ret_scores.tolist(),
                )
                row_dict = record._asdict()
                if query_semi_positives is not None:  # the optional column (schema.OPTIONAL_RETRIEVER_FEATURES)
                    row_dict["semi_positive_ids"] = [str(x) for x in query_semi_positives[qi]]
                out.append(row_dict)
            bar.update(len(chunk))
    if not return_info:
        return out
    sample = sample_queries(n_q, recall_sample)
    info["recall_at_m"] = 1.0 if approx is None else measure_recall(approx, g, q[sample], m)
    info["recall_k"] = m
    info["recall_queries"] = int(sample.size)
    return out, info
