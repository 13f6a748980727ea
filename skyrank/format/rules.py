"""The SkyLink paper's rules (arXiv 2603.08063) as pure functions: arrays or lists in, arrays or lists out.

One rule, one function, called by production: :func:`skyrank.mining.mine` (Eq. 1 ranks, Eq. 2, Eq. 6),
:func:`skyrank.validate.validate_dataset` (Eq. 2), SkyLink's training data (Eq. 7 and its ablations) and its
re-ranking and evaluation (the top-k permutation).

* **Ranking with labels** (:func:`ranking_order`, :func:`positive_ranks`): the full ranking is the gallery sorted by
  (-score, negative-before-positive flag, gallery index), the optimistic tie rule: a positive comes before every
  negative with the same score. The 1-based rank of a positive p is ``1 + #{refs scoring strictly higher} +
  #{positives with the same score and a smaller gallery index}``.
* **Eq. 2** (ground-truth swap rule, :func:`swap_rule_positions`, :func:`apply_swap_rule`): if the ground truth is
  among the top-m, drop it, otherwise drop the m-th candidate, so m-1 hard negatives remain. With several positives
  (satellite->drone: 54) every positive is dropped and the list is topped up from beyond rank m: the result is the
  first m-1 negatives of the ranking, which for one positive is exactly Eq. 2.
* **Eq. 6** (:func:`soft_label_similarity`): sim_j = cos(E_r(c_j), E_r(gt)) in the retriever's reference space.
* **Eq. 7** (:func:`soft_labels`, :func:`make_labels`): L_j = sim_j if sim_j > T else 0; the ground truth's label
  is 1. Ablations: hard labels (1 above T) and ground truth only.
* **Top-k permutation** (:func:`rerank_order`): re-ranked order = sort by (-score, retriever rank).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

#: float32 elements of one block of gathered embeddings held at once: 128 MiB.
_BLOCK_ELEMENTS = 1 << 25

#: Label modes of :func:`make_labels`: the paper's soft labels and its two ablations.
LABEL_MODES: tuple[str, ...] = ("soft", "hard", "gt-only")


def as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (rows, dim) array; ``ValueError`` naming ``name`` if empty or not finite."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows, dim), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_pair(query_emb: Any, ref_emb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Query and reference embeddings as float32 matrices of the same dimension (:func:`as_matrix` each)."""
    q = as_matrix(query_emb, "query_emb")
    r = as_matrix(ref_emb, "ref_emb")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query_emb has dimension {q.shape[1]} but ref_emb has {r.shape[1]}")
    return q, r


# ------------------------------------------------------------------------------------- ranking with labels


def ranking_order(scores: np.ndarray, gallery_idx: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Positions that sort references by (-score, negative flag, gallery index): the full ranking's order.

    The three arrays are aligned (one entry per reference); the result indexes into them, best first.
    """
    return np.lexsort((gallery_idx, ~np.asarray(is_positive, dtype=bool), -scores))


def count_strictly_greater(row: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, how many entries of ``row`` are strictly greater."""
    if values.size <= 16:
        return (row[None, :] > values[:, None]).sum(axis=1)
    ascending = np.sort(row)
    return row.size - np.searchsorted(ascending, values, side="right")


def tied_positives_before(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """For each positive, how many positives have the same score and a smaller gallery index (optimistic ties)."""
    return ((scores[None, :] == scores[:, None]) & (idx[None, :] < idx[:, None])).sum(axis=1)


def positive_ranks(row: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Optimistic 1-based full ranks (int64) of the gallery indices ``pos`` in one query's score row ``row``.

    rank(p) = 1 + #{references scoring strictly higher than p} + #{positives with p's score and a smaller index}.
    """
    s = row[pos]
    return (1 + count_strictly_greater(row, s) + tied_positives_before(s, pos)).astype(np.int64)


# ------------------------------------------------------------------------------------------------ Eq. 2


def swap_rule_positions(is_positive: Sequence[bool] | np.ndarray, m: int) -> np.ndarray:
    """Positions, in ranking order, of the hard negatives the swap rule keeps (SkyLink Eq. 2): the first m-1
    non-positives of a ranking given by its is-positive flags. Fewer when the ranking holds fewer negatives."""
    return np.flatnonzero(~np.asarray(is_positive, dtype=bool))[: m - 1]


def apply_swap_rule(retrieved_ids: Sequence[Any], positive_ids: Collection[Any], m: int) -> list[Any]:
    """The m-1 hard negatives of the ground-truth swap rule (SkyLink Eq. 2), generalised to several positives.

    ``retrieved_ids`` is the retriever's ranking, best first, at least its top-m; pass the top-(m + P) (P = the
    number of positives) or longer, so that the rule can always be completed. Eq. 2: if the ground truth is in
    the top-m it is dropped, otherwise the m-th candidate is dropped; both leave the first m-1 negatives. With
    several positives every positive is dropped and, when that leaves fewer than m-1, the list is topped up
    from the ranking beyond m (:func:`swap_rule_positions`). Raises ``ValueError`` when the list is shorter than
    m, has duplicates, or holds fewer than m-1 negatives.
    """
    if m < 2:
        raise ValueError(f"m must be >= 2, got {m}")
    ids = list(retrieved_ids)
    if len(ids) < m:
        raise ValueError(f"the swap rule needs at least the top-m={m} retrieved ids, got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise ValueError("retrieved_ids contains duplicates")
    keep = swap_rule_positions([cid in positive_ids for cid in ids], m)
    if keep.size < m - 1:
        raise ValueError(
            f"only {keep.size} negatives among the {len(ids)} retrieved ids, {m - 1} needed: pass the "
            f"top-(m + number of positives) = top-{m + len(positive_ids)} or more"
        )
    return [ids[j] for j in keep.tolist()]


# -------------------------------------------------------------------------------------------- Eq. 6-7


def soft_label_similarity(candidate_idx: Any, gt_idx: Any, ref_emb: Any, *, check: bool = True) -> np.ndarray:
    """cos(E_r(c_j), E_r(gt)) in the retriever's reference space (SkyLink Eq. 6), float32 clipped to [-1, 1].

    ``ref_emb`` holds L2-normalised gallery embeddings, so the cosine is a dot product. ``candidate_idx`` has
    shape (..., n) and ``gt_idx`` the leading shape (...): one query (n,) with a scalar, or a batch (Q, n)
    with (Q,). The result has the shape of ``candidate_idx``. Computed in blocks of bounded memory.
    ``check=False`` skips the checks (for callers that validated ``ref_emb`` as float32 and the indices as int64
    once: a check of ``ref_emb`` reads the whole gallery, which :func:`skyrank.mining.mine` must not do per chunk).
    """
    if check:
        ref = as_matrix(ref_emb, "ref_emb")
        cand = np.asarray(candidate_idx, dtype=np.int64)
        gt = np.asarray(gt_idx, dtype=np.int64)
        if cand.ndim == 0 or cand.shape[:-1] != gt.shape:
            raise ValueError(f"candidate_idx shape {cand.shape} does not match gt_idx shape {gt.shape} + (n,)")
        for name, arr in (("candidate_idx", cand), ("gt_idx", gt)):
            if arr.size and (arr.min() < 0 or arr.max() >= ref.shape[0]):
                raise ValueError(f"{name} out of range [0, {ref.shape[0]})")
    else:
        ref, cand, gt = ref_emb, candidate_idx, gt_idx
    n = cand.shape[-1]
    cand2 = cand.reshape(-1, n)
    gt1 = gt.reshape(-1)
    out = np.empty(cand2.shape, dtype=np.float32)
    block = max(1, _BLOCK_ELEMENTS // max(1, n * ref.shape[1]))
    for start in range(0, cand2.shape[0], block):
        c = ref[cand2[start : start + block]]  # (b, n, d)
        g = ref[gt1[start : start + block]][:, :, None]  # (b, d, 1)
        out[start : start + block] = np.matmul(c, g)[:, :, 0]
    return np.clip(out, -1.0, 1.0).reshape(cand.shape)


def soft_labels(similarities: Any, threshold: float = 0.9) -> np.ndarray:
    """SkyLink Eq. 7: L_j = sim_j if sim_j > T else 0, float32 (the ground truth's label 1 is added by the trainer)."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    sims = np.asarray(similarities, dtype=np.float32)
    return np.where(sims > threshold, sims, np.float32(0.0)).astype(np.float32)


def make_labels(similarities: Sequence[float], threshold: float = 0.9, mode: str = "soft") -> list[float]:
    """Labels of the hard negatives of one group from their ground-truth similarities (SkyLink Eq. 6–7).

    ``similarities`` are sim_j = cos(E_r(c_j), E_r(gt)) in the retriever's reference space (Eq. 6), the
    ``candidate_gt_similarity`` column of a SkyRank row. The ground truth itself is not passed: its label is
    always 1 (:func:`skylink_model.data.build_group` prepends it).

    Modes:
        - ``"soft"`` (Eq. 7, the paper's method): L_j = sim_j if sim_j > T else 0.
        - ``"hard"`` (hard-label ablation): L_j = 1 if sim_j > T else 0.
        - ``"gt-only"`` (no-threshold ablation): L_j = 0 for every negative.
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"`mode` must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    sims = list(similarities)
    if mode == "gt-only":
        return [0.0] * len(sims)
    # Eq. 7 (one comparison rule for both modes: soft_labels, float32 similarities as stored).
    labels = np.asarray(soft_labels(np.asarray(sims, dtype=np.float32), threshold), dtype=np.float64)
    if mode == "hard":
        return [1.0 if value > 0 else 0.0 for value in labels.tolist()]
    # Similarities may exceed 1 by float error; a label is a probability.
    return np.clip(labels, 0.0, 1.0).tolist()


# ------------------------------------------------------------------------------------ top-k permutation


def rerank_order(scores: Sequence[float] | Any, retriever_ranks: Sequence[int] | None = None) -> list[int]:
    """Indices sorted by (−score, retriever rank): the re-ranked order of a top-k, ties keep the retriever's order.

    ``scores`` is a sequence (or a tensor/array with ``tolist``); ``retriever_ranks`` defaults to the positions.
    """
    values = scores.tolist() if hasattr(scores, "tolist") else list(scores)
    ranks = list(range(len(values))) if retriever_ranks is None else list(retriever_ranks)
    if len(ranks) != len(values):
        raise ValueError(f"{len(values)} scores but {len(ranks)} retriever ranks.")
    return sorted(range(len(values)), key=lambda i: (-float(values[i]), ranks[i]))
