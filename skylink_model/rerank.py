"""Re-ranking a query's top-k with SkyLink (inference; SkyLink arXiv 2603.08063, "Inference").

All k prompts of a query start with the same query image, so its pixels are processed and its vision features are
computed once per query and reused for every pair (``mm_encoder_outputs``); only the candidates go through the
vision tower. Gallery images are shared across queries, so their processed pixels can be cached
(:class:`PixelCache`). Ties are broken deterministically by the retriever's rank: the new order sorts by
(−S, retriever rank), a stable sort.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from skylink_model.model import ProcessedImage, SkyLinkModel


class PixelCache:
    """A bounded LRU cache of processed gallery images, keyed by image id (``max_items`` entries)."""

    def __init__(self, max_items: int = 4096) -> None:
        if max_items < 1:
            raise ValueError(f"`max_items` must be ≥ 1, got {max_items}.")
        self.max_items = max_items
        self._items: OrderedDict[str, ProcessedImage] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get_or_process(self, model: SkyLinkModel, keys: Sequence[str], images: Sequence[Any]) -> list[ProcessedImage]:
        """Processed images for ``keys``; the missing ones are processed in one call and stored."""
        missing = [i for i, k in enumerate(keys) if k not in self._items]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            processed = model.process_images([images[i] for i in missing])
            for i, p in zip(missing, processed, strict=True):
                self._items[keys[i]] = p
        out = []
        for k in keys:
            self._items.move_to_end(k)
            out.append(self._items[k])
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return out


def rerank_order(scores: Sequence[float] | torch.Tensor, retriever_ranks: Sequence[int] | None = None) -> list[int]:
    """Indices sorted by (−score, retriever rank): the re-ranked order with deterministic tie-breaks."""
    values = scores.tolist() if isinstance(scores, torch.Tensor) else list(scores)
    ranks = list(range(len(values))) if retriever_ranks is None else list(retriever_ranks)
    if len(ranks) != len(values):
        raise ValueError(f"{len(values)} scores but {len(ranks)} retriever ranks.")
    return sorted(range(len(values)), key=lambda i: (-values[i], ranks[i]))


class _EvalMode:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def rerank_query(
    model: SkyLinkModel,
    query_image: Any,
    candidate_images: Sequence[Any],
    *,
    batch_size: int = 16,
    shared_vision: bool = True,
    candidate_keys: Sequence[str] | None = None,
    cache: PixelCache | None = None,
) -> torch.Tensor:
    """SkyLink scores S = wᵀh_last of one query's candidates, shape (n,), float32 on the CPU.

    ``shared_vision=True`` encodes the query image once and reuses its vision features for all pairs (families
    with ``spec.shared_vision``; others use the naive path); ``False`` runs every pair through the full model.
    With ``cache`` and ``candidate_keys`` the processed candidate pixels are reused across queries.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be ≥ 1, got {batch_size}.")
    n = len(candidate_images)
    if n == 0:
        return torch.zeros(0, dtype=torch.float32)
    if candidate_keys is not None and len(candidate_keys) != n:
        raise ValueError(f"{n} candidate images but {len(candidate_keys)} candidate keys.")
    shared = shared_vision and model.supports_shared_vision
    scores: list[torch.Tensor] = []
    with torch.inference_mode(), _EvalMode(model):
        if not shared:
            for start in range(0, n, batch_size):
                chunk = list(candidate_images[start : start + batch_size])
                scores.append(model(**model.build_pair_inputs([query_image] * len(chunk), chunk)).float().cpu())
            return torch.cat(scores)
        query = model.process_images([query_image])[0]
        query_features = model.encode_images([query])[0]
        if cache is not None and candidate_keys is not None:
            processed = cache.get_or_process(model, list(candidate_keys), candidate_images)
        else:
            processed = model.process_images(list(candidate_images))
        for start in range(0, n, batch_size):
            chunk = processed[start : start + batch_size]
            s = model.score_group(
                query_image, (), query=query, candidates=chunk, query_features=query_features, shared_vision=True
            )
            scores.append(s.float().cpu())
    return torch.cat(scores)


def rerank_topk(
    model: SkyLinkModel,
    query_image: Any,
    candidate_ids: Sequence[str],
    candidate_images: Sequence[Any],
    retriever_scores: Sequence[float],
    top_k: int = 10,
    *,
    batch_size: int = 16,
    shared_vision: bool = True,
    cache: PixelCache | None = None,
) -> list[str]:
    """Re-rank the retriever's top-``top_k`` of one query by S; return those ids in the new order.

    The retriever order is (−retriever score, input position); the top-k by it are scored, then sorted by
    (−S, retriever rank). Candidates beyond ``top_k`` are left out: callers keep them after the returned list.
    """
    if not (len(candidate_ids) == len(candidate_images) == len(retriever_scores)):
        raise ValueError(
            f"candidate_ids ({len(candidate_ids)}), candidate_images ({len(candidate_images)}) and "
            f"retriever_scores ({len(retriever_scores)}) must have the same length."
        )
    if top_k < 1:
        raise ValueError(f"`top_k` must be ≥ 1, got {top_k}.")
    retriever_order = sorted(range(len(candidate_ids)), key=lambda i: (-float(retriever_scores[i]), i))[:top_k]
    ids = [candidate_ids[i] for i in retriever_order]
    images = [candidate_images[i] for i in retriever_order]
    scores = rerank_query(
        model, query_image, images, batch_size=batch_size, shared_vision=shared_vision, candidate_keys=ids,
        cache=cache,
    )
    return [ids[i] for i in rerank_order(scores)]
