"""The listwise prompt baseline of SkyLink's appendix A.8 (arXiv 2603.08063).

Instead of training a value head, the base LVLM sees the query and all k candidates in one prompt and is asked to
write a 0–10 score per candidate, one ``Candidate i: score`` line each. The scores are parsed from the generated
text; whatever cannot be parsed for a candidate (missing line, junk, an out-of-range number) scores 0 and is
counted, and the count is reported beside the metrics. The prompt names the views of the config's direction
(``d2s``: a drone-view query and satellite-view candidates; ``s2d``: the reverse), or the data's own views
(``views=``: a street-view panorama or photo query against satellite-view candidates; issue 20).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from skylink_model.backbones import fit_image
from skyrank.images import as_uint8_rgb

MIN_SCORE = 0.0
MAX_SCORE = 10.0

#: ``Candidate <i> <separator> <score>`` on one line. ``(?!\d)`` makes the index the whole number, so a malformed
#: ``Candidate 10: N/A`` cannot be read as candidate 1 scoring 0; ``[ \t]`` keeps index and score on one line.
_LINE_RE = re.compile(
    r"candidate[ \t]*(?:#|no\.?|number)?[ \t]*(\d+)(?!\d)[ \t]*(?:[:=]|-(?!\d)|–|is|\))?[ \t]*(-?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)

#: (query view, candidate view) named in the prompt for each retrieval direction.
VIEWS: dict[str, tuple[str, str]] = {"d2s": ("drone-view", "satellite-view"), "s2d": ("satellite-view", "drone-view")}


def _views(direction: str, views: tuple[str, str] | None = None) -> tuple[str, str]:
    if views is not None:
        return views
    if direction not in VIEWS:
        raise ValueError(f"`direction` must be one of {', '.join(VIEWS)}, got {direction!r}")
    return VIEWS[direction]


def build_listwise_prompt(k: int, direction: str = "d2s", views: tuple[str, str] | None = None) -> str:
    """The instruction that follows the query image and the k candidate images (appendix A.8).

    ``direction`` (``"d2s"`` or ``"s2d"``, the retriever config's suffix) decides which views are named, unless
    ``views`` gives the (query, candidate) words (:func:`skylink_model.config.view_phrase`, e.g.
    ``("street-view panorama", "satellite-view")``).
    """
    if k < 1:
        raise ValueError(f"`k` must be ≥ 1, got {k}")
    query_view, candidate_view = _views(direction, views)
    lines = "\n".join(f"Candidate {i}: <score>" for i in range(1, k + 1))
    return (
        f"The first image is a {query_view} query. The {k} images after it are {candidate_view} candidates, numbered "
        f"1 to {k} in order. For each candidate, rate from 0 to 10 how likely it shows the same location as the "
        f"query (10 = certainly the same place, 0 = certainly a different place). Answer with exactly {k} lines "
        f"and nothing else, in this format:\n{lines}"
    )


def build_listwise_conversation(
    k: int,
    query_image: Any = None,
    candidate_images: Sequence[Any] = (),
    direction: str = "d2s",
    views: tuple[str, str] | None = None,
) -> list[dict]:
    """A one-turn chat: the query image, then ``Candidate i:`` + image for each candidate, then the instruction."""
    content: list[dict[str, Any]] = [{"type": "text", "text": "Query:"}, _image_item(query_image)]
    images = list(candidate_images) if candidate_images else [None] * k
    if len(images) != k:
        raise ValueError(f"expected {k} candidate images, got {len(images)}")
    for i, image in enumerate(images, start=1):
        content.append({"type": "text", "text": f"Candidate {i}:"})
        content.append(_image_item(image))
    content.append({"type": "text", "text": build_listwise_prompt(k, direction, views)})
    return [{"role": "user", "content": content}]


def _image_item(image: Any) -> dict[str, Any]:
    return {"type": "image"} if image is None else {"type": "image", "image": image}


def build_listwise_inputs(
    processor: Any,
    query_image: Any,
    candidate_images: Sequence[Any],
    direction: str = "d2s",
    views: tuple[str, str] | None = None,
) -> Any:
    """Tokenise the listwise prompt with the backbone's processor (left padding, generation prompt).

    Returns the processor's ``BatchFeature`` for a batch of one (``input_ids``, ``attention_mask``,
    ``mm_token_type_ids``, ``pixel_values``, ``image_grid_thw``, ...).
    """
    k = len(candidate_images)
    conversation = build_listwise_conversation(k, direction=direction, views=views)
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    images = [fit_image(image, processor) for image in as_uint8_rgb([query_image, *candidate_images])]  # panoramas
    return processor(text=[text], images=images, padding=True, padding_side="left", return_tensors="pt")


def parse_listwise_scores(text: str, k: int) -> tuple[list[float], int]:
    """Parse ``Candidate i: score`` lines into k scores; returns ``(scores, n_unparsable)``.

    Robust to malformed output: lines may come in any order, carry extra words (``Candidate 3: 7/10``,
    ``candidate #3 = 7.5``, ``**Candidate 3**: 7``); a candidate index outside 1..k is ignored; the first valid
    line of a candidate wins over later duplicates; a score outside [0, 10] is not accepted. Every candidate left
    without a valid score gets 0 and is counted in ``n_unparsable``.
    """
    if k < 1:
        raise ValueError(f"`k` must be ≥ 1, got {k}")
    found: dict[int, float] = {}
    cleaned = (text or "").replace("*", "").replace("`", "")
    for match in _LINE_RE.finditer(cleaned):
        index = int(match.group(1))
        if not 1 <= index <= k or index in found:
            continue
        try:
            value = float(match.group(2))
        except ValueError:  # pragma: no cover - the regex only admits numbers
            continue
        if MIN_SCORE <= value <= MAX_SCORE:
            found[index] = value
    scores = [found.get(i, 0.0) for i in range(1, k + 1)]
    return scores, k - len(found)


@dataclass
class ListwiseResult:
    """Scores of one query's candidates from the listwise prompt, and the raw text they were parsed from."""

    scores: list[float]
    n_unparsable: int
    text: str


@torch.inference_mode()
def score_listwise(
    model: Any,
    processor: Any,
    query_image: Any,
    candidate_images: Sequence[Any],
    max_new_tokens: int | None = None,
    direction: str = "d2s",
    views: tuple[str, str] | None = None,
) -> ListwiseResult:
    """Score one query's candidates with the listwise prompt: greedy ``generate`` then :func:`parse_listwise_scores`.

    ``model`` is the base ``...ForConditionalGeneration`` (no LoRA, no head); ``max_new_tokens`` defaults to
    enough for k lines (8 tokens per line); ``direction`` (or ``views``) names the views in the prompt.
    """
    k = len(candidate_images)
    if k == 0:
        return ListwiseResult([], 0, "")
    inputs = build_listwise_inputs(processor, query_image, candidate_images, direction, views)
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    tokenizer = getattr(processor, "tokenizer", processor)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generated = model.generate(
        **inputs,
        max_new_tokens=int(max_new_tokens or 8 * k + 8),
        do_sample=False,
        pad_token_id=pad_id,
    )
    new_tokens = generated[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True)
    scores, n_bad = parse_listwise_scores(text, k)
    return ListwiseResult(scores, n_bad, text)
