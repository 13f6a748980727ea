"""Pointwise zero-shot re-ranking: one yes/no judgement per (query, candidate) pair.

The base LVLM sees ``<query image> <candidate image>`` and :func:`~skylink_model.rerankers.prompts.pointwise_prompt`;
the candidate's score is the log-odds of answering yes, ``logsumexp(z_yes) − logsumexp(z_no)`` over the next-token
logits z (monoT5's true/false logit, jina-reranker-m0 and MonoQwen2-VL's yes/no scoring). k calls per query, batched.
arXiv 2603.27251 found this hurt or did nothing on VIGOR: VLMs judge relative evidence better than absolute relevance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from skylink_model.rerankers import prompts
from skylink_model.rerankers._base import Reranker, register_reranker
from skylink_model.rerankers._lvlm import answer_margins, answer_token_ids, load_lvlm, render


class PointwiseReranker(Reranker):
    """The yes/no log-odds of a base LVLM for each pair (no training)."""

    zero_shot = True

    def __init__(self, model: Any, processor: Any, *, batch_size: int = 16, name: str = "pointwise") -> None:
        self.model, self.processor, self.batch_size, self.name = model, processor, int(batch_size), name
        tok = getattr(processor, "tokenizer", processor)
        self.answers = tuple(answer_token_ids(tok, w) for w in prompts.POINTWISE_ANSWERS)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "method": "pointwise yes/no log-odds", "calls_per_query": "k",
                "prompt": "skylink_model.rerankers.prompts.pointwise_prompt"}  # fmt: skip

    def _score(self, query_image: Any, candidate_images: Sequence[Any], *, direction: str,
               candidate_keys: Sequence[str] | None) -> tuple[list[float], int, dict[str, Any]]:  # fmt: skip
        text = render(self.processor, 2, prompts.pointwise_prompt(direction))
        pairs = [(query_image, c) for c in candidate_images]
        scores = answer_margins(self.model, self.processor, text, pairs, self.answers, self.batch_size)
        return scores, len(pairs), {}


@register_reranker("pointwise")
def _pointwise(*, base_model: str | None = None, model: Any = None, processor: Any = None, device: str | None = None,
               batch_size: int = 16, **budget: Any) -> PointwiseReranker:  # fmt: skip
    if model is None:
        model, processor = load_lvlm(str(base_model), device=device, **budget)
    return PointwiseReranker(model, processor, batch_size=batch_size)
