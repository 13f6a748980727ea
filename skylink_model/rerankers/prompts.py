"""Every prompt text of the zero-shot re-rankers, in one place (the listwise prompt of appendix A.8 lives in
:mod:`skylink_model.prompt_baseline`, whose view names these reuse).

The images always come first and the text names them by position ("the first image", "the second image"), so a
chat template that moves images before the text (LLaVA-OneVision's) keeps the meaning. Each prompt names the views of
the retriever config's direction (``d2s``: a drone-view query and satellite-view candidates; ``s2d``: the reverse).
"""

from __future__ import annotations

from skylink_model.prompt_baseline import VIEWS

#: The answer words whose next-token logits score a pointwise judgement (one token each in the supported families).
POINTWISE_ANSWERS: tuple[str, str] = ("yes", "no")

#: The answer words of a pairwise judgement: the first candidate shown, or the second.
PAIRWISE_ANSWERS: tuple[str, str] = ("1", "2")


def views(direction: str) -> tuple[str, str]:
    """(query view, candidate view) named in the prompts for a retrieval direction (``d2s``, ``s2d``, ...)."""
    if direction not in VIEWS:
        raise ValueError(f"`direction` must be one of {', '.join(VIEWS)}, got {direction!r}")
    return VIEWS[direction]


def pointwise_prompt(direction: str = "d2s") -> str:
    """The yes/no question after ``<query image> <candidate image>`` (monoT5 / jina-reranker-m0 style)."""
    query_view, candidate_view = views(direction)
    return (
        f"The first image is a {query_view} query and the second image is a {candidate_view} candidate. "
        "Do they show the same location? Answer yes or no."
    )


def pairwise_prompt(direction: str = "d2s") -> str:
    """The two-way question after ``<query image> <candidate 1> <candidate 2>`` (arXiv 2603.27251's comparison)."""
    query_view, candidate_view = views(direction)
    return (
        f"The first image is a {query_view} query. The second and third images are {candidate_view} candidates 1 "
        "and 2. Which candidate shows the same location as the query? Answer 1 or 2."
    )
