"""What the zero-shot re-rankers share: loading a base LVLM, rendering a multi-image prompt, and reading the
next-token logits of answer words (the yes/no logit of monoT5-style rankers; MonoQwen2-VL and Qwen3-VL-Reranker
score the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Spellings tried for each answer word; every one that is a single token counts (log-sum-exp of their logits).
_VARIANTS = {"yes": ("yes", "Yes"), "no": ("no", "No")}


def load_lvlm(base_model: str, *, device: str | None = None, dtype: str = "auto", min_pixels: int | None = None,
              max_pixels: int | None = None) -> tuple[Any, Any]:  # fmt: skip
    """The base ``...ForConditionalGeneration`` and its processor (left padding, the family's image budget)."""
    from skylink_model.backbones import load_backbone

    model, processor, _ = load_backbone(
        base_model, dtype=dtype, device=device, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return model, processor


def answer_token_ids(tokenizer: Any, word: str) -> list[int]:
    """Single-token ids spelling ``word`` (and its capitalised variant); ``ValueError`` when there is none."""
    ids = []
    for spelling in _VARIANTS.get(word, (word,)):
        tok = tokenizer.encode(spelling, add_special_tokens=False)
        if len(tok) == 1 and tok[0] not in ids:
            ids.append(tok[0])
    if not ids:
        raise ValueError(f"the tokenizer has no single token for the answer {word!r}; this family cannot be scored")
    return ids


def render(processor: Any, n_images: int, text: str) -> str:
    """One user turn of ``n_images`` images then ``text``, with the generation prompt (the answer comes next)."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": text})
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip


def answer_margins(
    model: Any,
    processor: Any,
    text: str,
    images: Sequence[Sequence[Any]],
    answers: tuple[Sequence[int], Sequence[int]],
    batch_size: int = 16,
) -> list[float]:
    """For each prompt (the same ``text`` after its own images), logsumexp(logits of answer 0) − logsumexp(answer 1)
    at the next token: the log-odds of the first answer over the second. ``batch_size`` prompts per forward."""
    first, second = (torch.tensor(list(a)) for a in answers)
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(images), batch_size):
        chunk = [list(group) for group in images[start : start + batch_size]]
        batch = processor(text=[text] * len(chunk), images=chunk, padding=True, padding_side="left",
                          return_tensors="pt").to(device)  # fmt: skip
        logits = model(**batch, logits_to_keep=1).logits[:, -1].float()
        margin = torch.logsumexp(logits[:, first], dim=-1) - torch.logsumexp(logits[:, second], dim=-1)
        out.extend(margin.cpu().tolist())
    return out
