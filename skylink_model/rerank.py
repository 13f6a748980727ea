"""Re-ranking a query's top-k with SkyLink (inference; SkyLink arXiv 2603.08063, "Inference").

All k prompts of a query start with the same prefix (template, query image, prompt). By default (families with
``spec.shared_prefix``) the prefix runs once per query and the k candidate continuations run on its key/value cache
(:mod:`skylink_model.prefix`). Otherwise the query's pixels are processed and its vision features computed once per
query and reused for every pair (``mm_encoder_outputs``). Gallery images are shared across queries, so their
processed pixels (:class:`PixelCache`) and, while the vision weights are frozen, their vision features
(:class:`FeatureCache`, bounded in bytes) are computed once per run. The fast path runs each query on torch's
thread count or on one thread, whichever its measurements find faster (:func:`skylink_model.prefix.tuned_threads`:
on a busy machine its small operations lose more to OpenMP waits than they gain from a second thread).
Ties are broken deterministically by the retriever's rank: the new order sorts by (−S, retriever rank)
(:func:`skyrank.format.rules.rerank_order`, re-exported here).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from skylink_model.model import ProcessedImage, SkyLinkModel
from skylink_model.prefix import tuned_threads, warn_fallback_once
from skyrank.format import rules
from skyrank.format.rules import rerank_order as rerank_order  # re-exported: the rule lives there


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


class FeatureCache:
    """A least-recently-used cache of gallery vision features, keyed by image id and bounded by ``max_bytes``.

    Valid only while the vision weights are frozen: :meth:`get_or_encode` refuses a model in training mode or a call
    with autograd on while vision parameters are trainable, and a cache belongs to one model (``id``) for its life.
    An image whose features exceed ``max_bytes`` on their own is encoded but not stored.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ValueError(f"`max_bytes` must be ≥ 0, got {max_bytes}.")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._model_id: int | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _check(self, model: SkyLinkModel) -> None:
        if self._model_id is None:
            self._model_id = id(model)
        elif self._model_id != id(model):
            raise RuntimeError("a FeatureCache holds one model's features; make a new cache for another model.")
        if model.training:
            raise RuntimeError("FeatureCache is for evaluation: the model is in training mode (vision may change).")
        if torch.is_grad_enabled() and any(p.requires_grad for p in model.vision_parameters()):
            raise RuntimeError("FeatureCache needs frozen vision weights: call it under torch.inference_mode().")

    def get_or_encode(self, model: SkyLinkModel, keys: Sequence[str], processed: Sequence[ProcessedImage]):
        """Vision features (tokens, hidden) for ``keys``; the missing ones are encoded in one vision pass."""
        if len(keys) != len(processed):
            raise ValueError(f"{len(keys)} keys but {len(processed)} processed images.")
        self._check(model)
        missing = [i for i, k in enumerate(keys) if k not in self._items]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            feats = model.encode_images([processed[i] for i in missing])
            for i, f in zip(missing, feats, strict=True):
                fresh[i] = f
        out = []
        for i, k in enumerate(keys):
            if i in fresh:
                out.append(fresh[i])
                self._store(k, fresh[i])
            else:
                self._items.move_to_end(k)
                out.append(self._items[k])
        return out

    def _store(self, key: str, feature: torch.Tensor) -> None:
        size = feature.numel() * feature.element_size()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = feature.detach()
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


class _EvalMode:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = self.model.training
        if self.was_training:  # walking every module costs milliseconds per query on a small model
            self.model.eval()

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train()


def rerank_query(
    model: SkyLinkModel,
    query_image: Any,
    candidate_images: Sequence[Any],
    *,
    batch_size: int = 16,
    shared_vision: bool = True,
    candidate_keys: Sequence[str] | None = None,
    cache: PixelCache | None = None,
    shared_prefix: bool = True,
    feature_cache: FeatureCache | None = None,
) -> torch.Tensor:
    """SkyLink scores S = wᵀh_last of one query's candidates, shape (n,), float32 on the CPU.

    ``shared_prefix=True`` (default) runs the query's prefix once and the candidates' continuations on its cache,
    ``batch_size`` continuations at a time (families with ``spec.shared_prefix``; others fall back, logged once).
    ``shared_vision=True`` encodes the query image once and reuses its vision features for all pairs (families
    with ``spec.shared_vision``); both ``False`` runs every pair through the full model. With ``candidate_keys``,
    ``cache`` reuses processed candidate pixels and ``feature_cache`` their vision features across queries.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be ≥ 1, got {batch_size}.")
    n = len(candidate_images)
    if n == 0:
        return torch.zeros(0, dtype=torch.float32)
    if candidate_keys is not None and len(candidate_keys) != n:
        raise ValueError(f"{n} candidate images but {len(candidate_keys)} candidate keys.")
    if shared_prefix and not model.supports_shared_prefix:
        warn_fallback_once(model)
    prefix = shared_prefix and model.supports_shared_prefix
    shared = shared_vision and model.supports_shared_vision
    scores: list[torch.Tensor] = []
    with torch.inference_mode(), _EvalMode(model):
        if prefix:
            with tuned_threads(model, work=n + 1):  # its thread count, by measurement (busy machines)
                query = model.process_images([query_image])[0]
                if cache is not None and candidate_keys is not None:
                    processed = cache.get_or_process(model, list(candidate_keys), candidate_images)
                else:
                    processed = model.process_images(list(candidate_images))
                features = None
                if feature_cache is not None and candidate_keys is not None:
                    features = feature_cache.get_or_encode(model, list(candidate_keys), processed)
                    query_features = model.encode_images([query])[0]
                else:  # query and candidates in one vision pass
                    query_features, *features = model.encode_images([query, *processed])
                inputs = model.group_inputs(
                    query, processed, query_features=query_features, candidate_features=features,
                    chunk_size=batch_size,
                )  # fmt: skip
                return model(**inputs).float().cpu()
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
    shared_prefix: bool = True,
    feature_cache: FeatureCache | None = None,
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
    retriever_order = rules.rerank_order([float(x) for x in retriever_scores])[:top_k]  # (−retriever score, position)
    ids = [candidate_ids[i] for i in retriever_order]
    images = [candidate_images[i] for i in retriever_order]
    scores = rerank_query(
        model, query_image, images, batch_size=batch_size, shared_vision=shared_vision, candidate_keys=ids,
        cache=cache, shared_prefix=shared_prefix, feature_cache=feature_cache,
    )
    return [ids[i] for i in rules.rerank_order(scores)]
