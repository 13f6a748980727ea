"""Shared-prefix scoring and training of a SkyLink group (SkyLink arXiv 2603.08063: Eq. 4 scores, Eq. 8 loss).

The k prompts of a group are ``<template> <query image> <prompt> <candidate image> <end of turn>``: they share the
prefix ``<template> <query image> <prompt>`` (≈ 230 tokens at 384 px) and differ only in the continuation
``<candidate image> <end of turn + generation prompt>``. Instead of k full forwards this module runs

1. the prefix once (batch 1), recording every decoder layer's keys/values (:class:`_RecordLayer`);
2. the k continuations (left-padded, optionally in chunks) against those keys/values: each layer's cache entry
   holds the prefix once and serves it to the k rows as ``expand`` views (:class:`_ShareLayer`); only the layer
   being computed concatenates the view with the continuation's own keys/values, as attention needs one tensor;
3. the value head on each continuation's last token, S = wᵀh_last (Eq. 4).

Positions: the Qwen families' multimodal rotary positions (M-RoPE; Qwen3-VL's interleaved) are computed by the
model's own ``get_rope_index`` on each *whole* pair (prefix + continuation) and sliced, so every token gets the
position the naive path gives it. LLaVA-OneVision's language model has 1-D RoPE: each pair counts on from the
prefix (RoPE depends on relative positions only, so the naive path's left-padding offset changes nothing).
The attention mask is the 2-D mask ``[1…1 (prefix) | continuation padding mask]``; the model builds the causal
part from the cache length. Scores equal the naive path's to float tolerance (``tests/skylink_model/test_prefix.py``).

Vision features (:meth:`~skylink_model.model.SkyLinkModel.encode_images`) are what the language model reads at the
image tokens: Qwen's merger output, LLaVA-OneVision's projector output with its image-newline row. Qwen3-VL's
DeepStack features (added to the image tokens' hidden states after each of the first language layers) travel beside
them in the same tensor: the prefix pass adds the query's levels, so the recorded keys/values hold them, and each
continuation chunk adds its candidates' levels (:func:`~skylink_model.backbones.split_deepstack`).

Training: the whole group is one call of the wrapped module's ``forward`` (so DDP / DeepSpeed see one forward and
one backward); gradients reach the prefix through the recorded keys/values. Both cache layers are read-only after
recording, so non-reentrant gradient checkpointing can replay a layer: the decoder layers are told so for the
duration of the call (``_can_checkpoint_with_cache``). Continuation chunks (``chunk_size``) bound the activation
memory of the forward when gradient checkpointing is on.

All four families support this; a language model with sliding-window layers does not (see
:func:`supports_shared_prefix`): it uses the per-pair path, logged once.

Threads (:class:`ThreadTuner`): on a busy machine torch's OpenMP regions wait at their barrier for a thread the
scheduler has put aside, once per parallel op. The naive path's ops are large enough to absorb that; this path's are
several times smaller (a batch-1 prefix, one query image, continuations a third of a pair long), so the waits
dominate: with another 2-thread job on 2 cores it ran slower on 2 threads than on 1. The caller therefore runs a
group under :func:`tuned_threads`, which picks torch's thread count or 1 by measured seconds per token, re-measuring
the other choice every few groups (the load changes).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from skylink_model.backbones import split_deepstack

logger = logging.getLogger(__name__)

# Keys of the inputs dict that select the shared-prefix path of ``SkyLinkModel.forward``.
PREFIX_KEY = "prefix_input_ids"
_WARNED: set[str] = set()


class _RecordLayer(CacheLayerMixin):
    """Prefix pass: store the first key/value states this layer sees, return them unchanged (no past)."""

    is_sliding = False

    def __init__(self) -> None:
        super().__init__()
        self.recorded: tuple[torch.Tensor, torch.Tensor] | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if self.recorded is None:  # a gradient-checkpointing replay leaves the first record in place
            self.recorded = (key_states, value_states)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class _ShareLayer(CacheLayerMixin):
    """Continuation pass: the prefix keys/values (batch 1), served to ``batch`` rows as views; never written."""

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        super().__init__()
        self.keys, self.values, self.batch = keys, values, batch
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        shape = (key_states.shape[0], *self.keys.shape[1:])
        keys = torch.cat([self.keys.expand(shape).to(key_states.dtype), key_states], dim=-2)
        values = torch.cat([self.values.expand(shape).to(value_states.dtype), value_states], dim=-2)
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return int(self.keys.shape[-2])

    def get_max_length(self) -> int:
        return -1


class _PrefixCache(Cache):
    def __init__(self, layers: list[CacheLayerMixin]) -> None:
        super().__init__(layers=layers)


def supports_shared_prefix(model: Any) -> bool:
    """Whether ``model`` (a :class:`~skylink_model.model.SkyLinkModel`) can score on a shared prefix.

    Needs the family flag ``spec.shared_prefix`` (every family of :data:`~skylink_model.backbones.BACKBONE_DEFAULTS`)
    and a language model with full attention in every layer (a sliding window would need its own cache layer).
    """
    spec = getattr(model, "spec", None)
    if spec is None or not getattr(spec, "shared_prefix", False):
        return False
    text_config = model.base.config.get_text_config()
    layer_types = getattr(text_config, "layer_types", None) or ["full_attention"]
    return all(t == "full_attention" for t in layer_types)


def warn_fallback_once(model: Any) -> None:
    """Log once per family that the shared-prefix path is not available (sliding-window attention) and the per-pair
    path is used."""
    family = str(model.base.config.model_type)
    if family not in _WARNED:
        _WARNED.add(family)
        logger.warning(
            "shared-prefix scoring is not available for the %r family; scoring every pair in full (slower).", family
        )


class ThreadTuner:
    """Picks the intra-op thread count of the fast path, torch's own or 1, by measured seconds per unit of work.

    Each choice is timed first; then the faster (by an exponential moving average) is used, and every
    ``explore_every``-th group runs on the other one, so a change of load is seen within a few groups. Not thread-safe:
    one tuner per loop (:func:`tuned_threads` keeps one per model for scoring and one for training).
    """

    def __init__(self, explore_every: int = 6, smoothing: float = 0.5, *, enabled: bool = True) -> None:
        if explore_every < 2:
            raise ValueError(f"`explore_every` must be ≥ 2, got {explore_every}.")
        self.enabled = enabled  # False: always torch's own count (the behaviour before the tuner, for benchmarks)
        self.explore_every = explore_every
        self.smoothing = smoothing
        self.seconds_per_work: dict[int, float] = {}
        self.calls = 0

    def choose(self, default: int) -> int:
        """The thread count for the next group, given torch's current one."""
        options = [default, 1] if default > 1 and self.enabled else [default]
        self.calls += 1
        for n in options:
            if n not in self.seconds_per_work:
                return n
        ranked = sorted(options, key=lambda n: self.seconds_per_work[n])
        return ranked[-1] if len(ranked) > 1 and self.calls % self.explore_every == 0 else ranked[0]

    def record(self, threads: int, seconds: float, work: float) -> None:
        rate = seconds / max(work, 1e-9)
        old = self.seconds_per_work.get(threads)
        self.seconds_per_work[threads] = rate if old is None else self.smoothing * old + (1 - self.smoothing) * rate


def thread_tuners(model: Any) -> dict[str, ThreadTuner]:
    """``model``'s tuners by kind (``"score"``, ``"train"``), created on first use; their ``seconds_per_work`` is the
    measured state."""
    tuners = model.__dict__.setdefault("_thread_tuners", {})
    for kind in ("score", "train"):
        tuners.setdefault(kind, ThreadTuner())
    return tuners


def set_thread_tuning(model: Any, enabled: bool) -> None:
    """Switch ``model``'s thread tuning on or off (off: every group on torch's thread count, the behaviour before
    the tuner). Off makes repeated scoring bit-for-bit repeatable: a different thread count splits BLAS's sums
    differently, which moves fp32 scores by about 1e-5 in a 36-layer model."""
    for tuner in thread_tuners(model).values():
        tuner.enabled = enabled


@contextlib.contextmanager
def tuned_threads(model: Any, work: float) -> Iterator[int]:
    """Run the block (one group on the fast path: forward, and backward when training) on the thread count that
    ``model``'s :class:`ThreadTuner` picks; restore torch's count afterwards and record the block's time. A model on
    an accelerator runs on torch's count, untuned.

    ``work``: the group's size in any unit that scales with its cost (e.g. its number of images). Training (autograd
    on: forward + backward) and scoring cost differently per unit, so each has its own tuner.
    """
    default = torch.get_num_threads()
    if model.device.type != "cpu":  # the accelerator does the work; leave the CPU threads alone
        yield default
        return
    tuner = thread_tuners(model)["train" if torch.is_grad_enabled() else "score"]
    threads = tuner.choose(default)
    if threads != default:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        yield threads
    finally:
        tuner.record(threads, time.perf_counter() - start, work)
        if threads != default:
            torch.set_num_threads(default)


def _cache_kwarg(language_model: Any) -> str:
    params = inspect.signature(type(language_model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@contextlib.contextmanager
def _cache_through_checkpointing(language_model: Any) -> Iterator[None]:
    """Let the decoder layers keep our read-only cache under gradient checkpointing (their replay reads the same
    states); restored afterwards. Reentrant checkpointing is refused: it would not pass gradients to the prefix's
    keys/values, which reach the layers through the cache rather than as arguments."""
    layers = list(getattr(language_model, "layers", []))
    for layer in layers:
        func = getattr(layer, "_gradient_checkpointing_func", None)
        if getattr(layer, "gradient_checkpointing", False) and torch.is_grad_enabled() and layer.training:
            if getattr(func, "keywords", {}).get("use_reentrant", True):
                raise ValueError(
                    "shared-prefix training needs non-reentrant gradient checkpointing "
                    '(gradient_checkpointing_kwargs={"use_reentrant": False}, as SkyLinkModel.'
                    "enable_gradient_checkpointing sets); or train with shared_prefix=False (--no-shared-prefix)."
                )
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("_can_checkpoint_with_cache", None)


def build_group_inputs(model: Any, query: Any, candidates: Sequence[Any]) -> dict[str, Any]:
    """Token ids, masks and positions of one group, split into its prefix and k continuations.

    Args:
        model: a :class:`~skylink_model.model.SkyLinkModel` whose family supports the shared prefix.
        query / candidates: :class:`~skylink_model.model.ProcessedImage` (``tokens`` gives the token counts).

    Returns:
        ``prefix_input_ids`` (1, P), ``input_ids`` (k, C) and ``attention_mask`` (k, C) of the left-padded
        continuations, ``prefix_position_ids`` and ``position_ids``; all on the model's device. Qwen (M-RoPE):
        positions (3, 1, P) and (3, k, C), those of the whole pair ``prefix + continuation_i`` (``get_rope_index``),
        sliced, plus ``image_grid_thw`` (k, 3) of the candidates and ``query_grid_thw`` (1, 3). LLaVA-OneVision
        (1-D RoPE): (1, P) and (k, C), each pair counting on from the prefix.
    """
    if not candidates:
        raise ValueError("a group needs at least one candidate.")
    base = model.base
    pre, mid, post = model._template_ids()
    image_id = int(base.config.image_token_id)
    pad_id = model.processor.tokenizer.pad_token_id
    prefix = pre + [image_id] * query.tokens + mid
    n_prefix = len(prefix)
    conts = [[image_id] * c.tokens + post for c in candidates]
    length = max(len(c) for c in conts)
    k = len(conts)
    input_ids = torch.full((k, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((k, length), dtype=torch.long)
    for i, cont in enumerate(conts):
        input_ids[i, length - len(cont) :] = torch.tensor(cont, dtype=torch.long)
        attention_mask[i, length - len(cont) :] = 1
    device = model.device
    inputs = {
        PREFIX_KEY: torch.tensor([prefix], dtype=torch.long, device=device),
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
    }
    if model.spec.image_layout != "grid":  # 1-D RoPE
        steps = torch.arange(length, dtype=torch.long) - length + attention_mask.sum(1, keepdim=True)
        inputs["prefix_position_ids"] = torch.arange(n_prefix, dtype=torch.long, device=device).unsqueeze(0)
        inputs["position_ids"] = (n_prefix + steps.clamp(min=0)).to(device)
        return inputs
    position_ids = torch.zeros((3, k, length), dtype=torch.long)
    prefix_positions = None
    by_grid: dict[tuple[int, ...], torch.Tensor] = {}  # candidates with one grid share their positions
    for i, (cont, cand) in enumerate(zip(conts, candidates, strict=True)):
        grid_key = tuple(int(v) for v in cand.image_grid_thw.tolist())
        if grid_key not in by_grid:
            ids = torch.tensor([prefix + cont], dtype=torch.long)
            pos, _ = base.get_rope_index(
                input_ids=ids,
                mm_token_type_ids=(ids == image_id).long(),
                image_grid_thw=torch.stack([query.image_grid_thw, cand.image_grid_thw]).long(),
                attention_mask=None,
            )
            by_grid[grid_key] = pos[:, 0]
        pos = by_grid[grid_key]
        if prefix_positions is None:
            prefix_positions = pos[:, :n_prefix]
        position_ids[:, i, length - len(cont) :] = pos[:, n_prefix:]
    inputs["prefix_position_ids"] = prefix_positions.unsqueeze(1).to(device)
    inputs["position_ids"] = position_ids.to(device)
    inputs["query_grid_thw"] = query.image_grid_thw.view(1, 3).to(device)
    inputs["image_grid_thw"] = torch.stack([c.image_grid_thw for c in candidates]).to(device)
    return inputs


def _scatter_features(embeds: torch.Tensor, ids: torch.Tensor, image_id: int, features: torch.Tensor) -> torch.Tensor:
    mask = (ids == image_id).unsqueeze(-1).expand_as(embeds)
    n_tokens = int((ids == image_id).sum())
    if n_tokens != features.shape[0]:
        raise ValueError(f"{n_tokens} image tokens but {features.shape[0]} image feature rows.")
    return embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))


def _deepstack_kwargs(image_mask: torch.Tensor, levels: list[torch.Tensor]) -> dict[str, Any]:
    """Qwen3-VL's language-model arguments that add DeepStack level i to the image tokens after layer i."""
    if not levels:
        return {}
    return {"visual_pos_masks": image_mask, "deepstack_visual_embeds": levels}


def shared_prefix_hidden(
    model: Any,
    *,
    prefix_input_ids: torch.Tensor,
    prefix_position_ids: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    query_grid_thw: torch.Tensor | None = None,
    query_pixel_values: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    query_features: torch.Tensor | None = None,
    candidate_features: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Last-token hidden states (k, hidden) of the k continuations, computed on one shared prefix.

    Vision features (:meth:`~skylink_model.model.SkyLinkModel.encode_images`, DeepStack levels beside them) come from
    ``query_features`` / ``candidate_features`` (rows in candidate order; e.g. from a gallery feature cache at
    evaluation) or are computed here from the pixels, query and candidates in one vision pass (so vision LoRA is
    trained by this same call). ``chunk_size`` splits the continuations into batches of that many rows, all against
    the one prefix.
    """

    if attention_mask.shape != input_ids.shape or not bool(attention_mask[:, -1].all()):
        raise ValueError("continuations must be left-padded, with an attention_mask of the same shape as input_ids.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"`chunk_size` must be ≥ 1, got {chunk_size}.")
    base = model.base
    lm = base.language_model
    image_id = int(base.config.image_token_id)
    need_query, need_cands = query_features is None, candidate_features is None
    if need_query or need_cands:
        pix, grids = [], []
        if need_query:
            pix.append(query_pixel_values)
            grids.append(query_grid_thw)
        if need_cands:
            pix.append(pixel_values)
            grids.append(image_grid_thw)
        if any(p is None for p in pix):
            raise ValueError("pass pixel values or precomputed features for the query and the candidates.")
        grid = torch.cat(grids) if model.spec.image_layout == "grid" else None
        feats = model.vision_features(torch.cat(pix), grid)
        if need_query:
            query_features = feats.pop(0)
        if need_cands:
            candidate_features = torch.cat(feats)
    embed = base.get_input_embeddings()
    cache_kw = _cache_kwarg(lm)
    n_layers = len(lm.layers)
    k = input_ids.shape[0]
    step = k if chunk_size is None else chunk_size
    query_main, query_deep = split_deepstack(query_features, embed.embedding_dim)
    cand_main, cand_deep = split_deepstack(candidate_features, embed.embedding_dim)
    with _cache_through_checkpointing(lm):
        prefix_embeds = _scatter_features(embed(prefix_input_ids), prefix_input_ids, image_id, query_main)
        record = _PrefixCache([_RecordLayer() for _ in range(n_layers)])
        lm(inputs_embeds=prefix_embeds, position_ids=prefix_position_ids, attention_mask=None, use_cache=False,
           **_deepstack_kwargs(prefix_input_ids == image_id, query_deep), **{cache_kw: record})  # fmt: skip
        if any(layer.recorded is None for layer in record.layers):
            raise RuntimeError("the prefix pass did not reach every decoder layer's cache; use the per-pair path.")
        is_image = input_ids == image_id
        cont_embeds = _scatter_features(embed(input_ids), input_ids, image_id, cand_main)
        n_prefix = prefix_input_ids.shape[1]
        full_mask = torch.cat([attention_mask.new_ones(k, n_prefix), attention_mask], dim=1)
        offsets = [0, *torch.cumsum(is_image.sum(1), 0).tolist()]  # each row's first image-feature row
        hidden = []
        for lo in range(0, k, step):
            hi = min(k, lo + step)
            share = _PrefixCache([_ShareLayer(*layer.recorded, batch=hi - lo) for layer in record.layers])
            deep = [level[offsets[lo] : offsets[hi]] for level in cand_deep]
            positions = position_ids.narrow(-2, lo, hi - lo)  # the batch axis of (3, k, C) and of (k, C)
            out = lm(inputs_embeds=cont_embeds[lo:hi], position_ids=positions,
                     attention_mask=full_mask[lo:hi], use_cache=False, **_deepstack_kwargs(is_image[lo:hi], deep),
                     **{cache_kw: share})  # fmt: skip
            hidden.append(out.last_hidden_state[:, -1])
    return torch.cat(hidden)


__all__ = [
    "PREFIX_KEY",
    "ThreadTuner",
    "build_group_inputs",
    "shared_prefix_hidden",
    "set_thread_tuning",
    "supports_shared_prefix",
    "thread_tuners",
    "tuned_threads",
    "warn_fallback_once",
]
