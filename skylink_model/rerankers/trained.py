"""The trained re-ranker and the listwise prompt behind the same interface as the zero-shot baselines.

* ``skylink``: a SkyLink run (LoRA + value head, S = wᵀh_last), scored by :func:`skylink_model.rerank.rerank_query`
  (one shared prefix per query where the family supports it, gallery pixels and vision features cached across
  queries). k calls per query (one judgement per pair).
* ``listwise``: the prompt of SkyLink's appendix A.8 (:mod:`skylink_model.prompt_baseline`): one ``generate`` per
  query writes a 0–10 score per candidate; unparsable candidates score 0 and are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skylink_model.rerankers._base import Reranker, register_reranker
from skylink_model.rerankers._lvlm import load_lvlm


class SkyLinkReranker(Reranker):
    """A trained SkyLink model (``zero_shot`` False)."""

    zero_shot = False

    def __init__(self, skylink: Any, *, batch_size: int = 16, shared_prefix: bool = True,
                 feature_cache_mb: float = 1024.0, name: str = "skylink") -> None:  # fmt: skip
        from skylink_model.rerank import FeatureCache, PixelCache

        self.skylink, self.name = skylink, name
        self.model = skylink.backbone
        self.batch_size, self.shared_prefix = int(batch_size), bool(shared_prefix)
        shared = getattr(skylink, "supports_shared_vision", False)
        self.pixel_cache = PixelCache() if shared else None
        self.feature_cache = (FeatureCache(int(feature_cache_mb * 2**20))
                              if shared and shared_prefix and feature_cache_mb > 0 else None)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        cfg = getattr(self.skylink, "config", None)
        return {**super().describe(), "method": "SkyLink value head S = w^T h_last", "calls_per_query": "k",
                "loss": getattr(cfg, "loss", "bce"), "base_model": getattr(cfg, "base_model", None)}  # fmt: skip

    def _score(self, query_image: Any, candidate_images: Sequence[Any], *, direction: str,
               candidate_keys: Sequence[str] | None) -> tuple[list[float], int, dict[str, Any]]:  # fmt: skip
        from skylink_model.rerank import rerank_query

        scores = rerank_query(
            self.skylink, query_image, candidate_images, batch_size=self.batch_size, candidate_keys=candidate_keys,
            cache=self.pixel_cache if candidate_keys is not None else None, shared_prefix=self.shared_prefix,
            feature_cache=self.feature_cache if candidate_keys is not None else None,
        )  # fmt: skip
        return scores.tolist(), len(candidate_images), {}


class ListwiseReranker(Reranker):
    """The appendix-A.8 listwise prompt on a base LVLM (no training)."""

    zero_shot = True

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int | None = None,
                 name: str = "listwise") -> None:  # fmt: skip
        self.model, self.processor, self.max_new_tokens, self.name = model, processor, max_new_tokens, name

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": "listwise 0-10 scores, one generate (SkyLink appendix A.8)",
                "calls_per_query": "1"}  # fmt: skip

    def _score(self, query_image: Any, candidate_images: Sequence[Any], *, direction: str,
               candidate_keys: Sequence[str] | None) -> tuple[list[float], int, dict[str, Any]]:  # fmt: skip
        from skylink_model.prompt_baseline import score_listwise

        result = score_listwise(self.model, self.processor, query_image, candidate_images, self.max_new_tokens,
                                direction=direction)  # fmt: skip
        return result.scores, 1, {"unparsable": result.n_unparsable}


@register_reranker("skylink")
def _skylink(*, run: Any = None, skylink: Any = None, device: str | None = None, **kwargs: Any) -> SkyLinkReranker:
    if skylink is None:
        from skylink_model.model import SkyLinkModel

        skylink = SkyLinkModel.from_pretrained(run, device=device)
    return SkyLinkReranker(skylink, **kwargs)


@register_reranker("listwise")
def _listwise(*, base_model: str | None = None, model: Any = None, processor: Any = None, device: str | None = None,
              max_new_tokens: int | None = None, **budget: Any) -> ListwiseReranker:  # fmt: skip
    if model is None:
        model, processor = load_lvlm(str(base_model), device=device, **budget)
    return ListwiseReranker(model, processor, max_new_tokens=max_new_tokens)
