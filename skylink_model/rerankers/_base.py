"""The re-ranker interface every method of the leaderboard implements, its cost record and its registry.

A re-ranker scores one query's candidates (the retriever's top-k, in retriever order) and says what that cost:

* ``calls``: the LVLM judgements it asked for (one per pair for pointwise scoring, SkyLink included; one per
  comparison for pairwise; one ``generate`` per query for the listwise prompt);
* ``tokens``: the tokens the language model embedded (prompt tokens, image placeholder tokens, padding and
  generated tokens; a shared prefix once), counted by a hook on the input embedding (:class:`TokenCounter`);
* ``seconds``: wall time of the scoring on this device (image loading excluded).

Higher scores rank first; ties keep the retriever's order (:func:`skyrank.format.rules.rerank_order`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from skyrank.errors import UnknownNameError


@dataclass
class Cost:
    """What scoring cost: LVLM judgements, language-model tokens and wall seconds."""

    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.calls + other.calls, self.tokens + other.tokens, self.seconds + other.seconds)

    def to_dict(self) -> dict[str, float]:
        return {"calls": self.calls, "tokens": self.tokens, "seconds": round(self.seconds, 6)}


@dataclass
class RerankOutput:
    """One query's scores (aligned with the candidates given) and their cost."""

    scores: list[float]
    cost: Cost
    extra: dict[str, Any] = field(default_factory=dict)


class TokenCounter:
    """Counts forward passes and tokens through a model's input embedding while in a ``with`` block.

    The hook sits on ``model.get_input_embeddings()``, which every scoring path goes through (full forwards,
    :mod:`skylink_model.prefix`'s prefix and continuations, each ``generate`` step), so ``tokens`` is the number of
    token positions the language model processed, padding included.
    """

    def __init__(self, model: Any) -> None:
        self.embedding = model.get_input_embeddings()
        self.tokens = 0
        self.forwards = 0
        self._handle: Any = None

    def _hook(self, module: Any, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.tokens += int(args[0].numel())
            self.forwards += 1

    def __enter__(self) -> TokenCounter:
        self._handle = self.embedding.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class Reranker:
    """Base class: ``score(query_image, candidate_images, direction=...)`` → :class:`RerankOutput`.

    Attributes:
        name: the leaderboard row's name.
        zero_shot: True when no weight was trained for re-ranking (the prompt baselines); on random tiny weights
            such a row measures cost, not quality.
        model: the module whose input embedding :class:`TokenCounter` hooks.
    """

    name: str = ""
    zero_shot: bool = True
    model: Any = None

    def describe(self) -> dict[str, Any]:
        """The row's settings (method, aggregation, calls per query), recorded beside its metrics."""
        return {"name": self.name, "zero_shot": self.zero_shot}

    def _score(self, query_image: Any, candidate_images: Sequence[Any], *, direction: str,
               candidate_keys: Sequence[str] | None) -> tuple[list[float], int, dict[str, Any]]:  # fmt: skip
        raise NotImplementedError

    def score(
        self,
        query_image: Any,
        candidate_images: Sequence[Any],
        *,
        direction: str = "d2s",
        candidate_keys: Sequence[str] | None = None,
    ) -> RerankOutput:
        """Scores of ``candidate_images`` for ``query_image`` (higher = more likely the same location), with cost."""
        if not candidate_images:
            return RerankOutput([], Cost())
        tic = time.perf_counter()
        with TokenCounter(self.model) as counter, torch.inference_mode():
            scores, calls, extra = self._score(
                query_image, candidate_images, direction=direction, candidate_keys=candidate_keys
            )
        seconds = time.perf_counter() - tic
        if len(scores) != len(candidate_images):
            raise RuntimeError(f"{self.name} returned {len(scores)} scores for {len(candidate_images)} candidates")
        return RerankOutput([float(s) for s in scores], Cost(calls, counter.tokens, seconds), extra)


#: name → factory(**kwargs) -> Reranker
_REGISTRY: dict[str, Callable[..., Reranker]] = {}


def register_reranker(name: str) -> Callable[[Callable[..., Reranker]], Callable[..., Reranker]]:
    """Register a re-ranker factory under ``name`` (lower case, ``-`` separated)."""

    def wrap(factory: Callable[..., Reranker]) -> Callable[..., Reranker]:
        if name in _REGISTRY:
            raise ValueError(f"re-ranker {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_rerankers() -> list[str]:
    return sorted(_REGISTRY)


def create_reranker(name: str, **kwargs: Any) -> Reranker:
    """Build a registered re-ranker; :class:`UnknownNameError` lists the names."""
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown re-ranker {name!r}; choose one of {', '.join(list_rerankers())}")
    return _REGISTRY[name](**kwargs)
