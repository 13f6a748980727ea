"""LVLM backbones of SkyLink: one table of per-family defaults and one loader.

The table is keyed by ``config.model_type`` (like peft's ``TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``).
LoRA targets are the language model's q/k/v projections plus the vision tower's attention input projection
(Qwen2-VL / Qwen2.5-VL / Qwen3-VL: the fused ``attn.qkv``; LLaVA-OneVision's SigLIP tower: ``self_attn.{q,k,v}_proj``,
already matched by the language names). A bare ``"proj"`` is never used: it also matches ``patch_embed.proj``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skyrank.errors import UnknownNameError


@dataclass(frozen=True)
class BackboneSpec:
    """Per-family defaults.

    Attributes:
        lora_targets: Last path components of the Linear layers that get LoRA (both towers).
        language_prefix / vision_prefix: Module paths of the two towers inside ``...ForConditionalGeneration``.
        min_pixels / max_pixels: Default image budget (``None``: keep the processor's own).
        yes_token / no_token: Tokens whose ``lm_head`` rows initialise the value head (``head_init="yes-no"``).
        image_layout: How an image enters the prompt. ``"grid"`` (Qwen families): pixel patches with
            ``image_grid_thw``, ``prod(grid) / merge²`` ``<|image_pad|>`` tokens, M-RoPE positions from the model's
            ``get_rope_index``, and (Qwen3-VL) DeepStack features added to the first language layers' image tokens.
            ``"base"`` (LLaVA-OneVision's multi-image path): one base-resolution view per image, padded to square;
            the projector's features plus one image-newline token; 1-D RoPE.
        shared_vision: The family supports :mod:`skylink_model.rerank`'s vision-feature reuse (processed images,
            vision features computed once per image, ``mm_encoder_outputs``).
        shared_prefix: The family supports :mod:`skylink_model.prefix` (one prefix forward per group, the k
            continuations on its key/value cache, each token at the naive path's position); verified by a test.
    """

    lora_targets: tuple[str, ...]
    language_prefix: str = "model.language_model"
    vision_prefix: str = "model.visual"
    min_pixels: int | None = None
    max_pixels: int | None = None
    yes_token: str = "yes"
    no_token: str = "no"
    image_layout: str = "grid"
    shared_vision: bool = False
    shared_prefix: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


BACKBONE_DEFAULTS: dict[str, BackboneSpec] = {
    # 28 px per merged token (patch 14 × merge 2): 256 tokens max per image (a 448² image), 4 min.
    "qwen2_vl": BackboneSpec(
        lora_targets=("q_proj", "k_proj", "v_proj", "qkv"),
        min_pixels=4 * 28 * 28,
        max_pixels=256 * 28 * 28,
        shared_vision=True,
        shared_prefix=True,
    ),
    "qwen2_5_vl": BackboneSpec(
        lora_targets=("q_proj", "k_proj", "v_proj", "qkv"),
        min_pixels=4 * 28 * 28,
        max_pixels=256 * 28 * 28,
        shared_vision=True,
        shared_prefix=True,
    ),
    # 32 px per merged token (patch 16 × merge 2). The DeepStack features travel with the cached vision features.
    "qwen3_vl": BackboneSpec(
        lora_targets=("q_proj", "k_proj", "v_proj", "qkv"),
        min_pixels=4 * 32 * 32,
        max_pixels=256 * 32 * 32,
        shared_vision=True,
        shared_prefix=True,
    ),
    # SigLIP attention uses q_proj/k_proj/v_proj too. A pair's two images go in as one multi-image request, so each
    # is encoded at the base resolution (384 px: 729 features + 1 newline token), not tiled (anyres).
    "llava_onevision": BackboneSpec(
        lora_targets=("q_proj", "k_proj", "v_proj"),
        vision_prefix="model.vision_tower",
        image_layout="base",
        shared_vision=True,
        shared_prefix=True,
    ),
}


def supported_families() -> list[str]:
    """The ``model_type`` values :func:`load_backbone` accepts."""
    return sorted(BACKBONE_DEFAULTS)


def get_backbone_spec(model_type: str) -> BackboneSpec:
    """The defaults of one family; an unknown family raises :class:`UnknownNameError` listing the supported ones."""
    try:
        return BACKBONE_DEFAULTS[model_type]
    except KeyError:
        raise UnknownNameError(
            f"Unsupported backbone family {model_type!r}. Supported model types: {', '.join(supported_families())} "
            "(Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision)."
        ) from None


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None) -> torch.dtype:
    """``"auto"``/``None`` → bfloat16 on a CUDA device that supports it, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"`dtype` must be one of auto, {', '.join(table)}, got {dtype!r}.")
    return table[dtype]


def squashes_to_square(processor: Any) -> bool:
    """Whether the processor resizes every image to one fixed height x width (LLaVA-OneVision's SigLIP processor,
    384 x 384 on its multi-image path), which would squash a panorama; ``False`` for a pixel budget (Qwen's
    ``shortest_edge``/``longest_edge``: the grid keeps the image's aspect ratio)."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None) or {}
    get = size.get if hasattr(size, "get") else lambda key: getattr(size, key, None)
    if get("longest_edge") is not None or get("shortest_edge") is not None:
        return False
    return get("height") is not None and get("width") is not None


def fit_image(image: Any, processor: Any) -> Any:
    """An image as the backbone should see it (issue 20: a 2:1 street panorama is never squashed to a square).

    Under a pixel budget (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) the image is returned unchanged: the processor scales it
    to at most ``max_pixels`` keeping its aspect ratio, so a 2048 x 1024 panorama becomes a 2:1 grid with about the
    tokens of a square image (at 256 x 28^2: 22 x 44 patches, 242 tokens). Where the processor squashes every image
    to a fixed square (:func:`squashes_to_square`: LLaVA-OneVision), a non-square PIL image is centred on a square
    canvas of the processor's mean colour (LLaVA's ``expand2square``), so its content keeps its shape.
    """
    from PIL import Image

    if not isinstance(image, Image.Image) or image.width == image.height or not squashes_to_square(processor):
        return image
    image_processor = getattr(processor, "image_processor", processor)
    mean = getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)
    fill = tuple(int(round(255 * float(m))) for m in mean)
    side = max(image.width, image.height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def apply_image_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
    """Set the per-image pixel budget on a Qwen-style image processor (``size`` shortest/longest edge, in pixels)."""
    if min_pixels is None and max_pixels is None:
        return
    image_processor = processor.image_processor
    size = image_processor.size
    current = dict(size.items()) if hasattr(size, "items") else dict(vars(size))
    if "shortest_edge" not in current or "longest_edge" not in current:
        raise ValueError(
            f"{type(image_processor).__name__} has no pixel budget (size={size}); leave min_pixels/max_pixels unset."
        )
    current = {k: v for k, v in current.items() if v is not None}
    if min_pixels is not None:
        current["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        current["longest_edge"] = int(max_pixels)
    if current["shortest_edge"] > current["longest_edge"]:
        raise ValueError(f"min_pixels ({current['shortest_edge']}) > max_pixels ({current['longest_edge']}).")
    image_processor.size = type(size)(**current) if not isinstance(size, dict) else current


def load_backbone(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | dict | None = None,
    device: str | torch.device | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[Any, Any, BackboneSpec]:
    """Load an LVLM and its processor by hub id or local folder.

    Uses ``AutoModelForImageTextToText`` / ``AutoProcessor`` (the same path for ``Qwen/Qwen2-VL-7B-Instruct`` and a
    :mod:`skylink_model.testing` folder). The tokenizer pads on the left (last-token scoring) and the image budget
    (``min_pixels``/``max_pixels``, else the family default) is applied to the image processor.

    Returns:
        ``(model, processor, spec)``: the ``...ForConditionalGeneration`` in eval mode on ``device``, the processor,
        and the family's :class:`BackboneSpec`.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    name = str(name_or_path)
    hf_config = AutoConfig.from_pretrained(name)
    spec = get_backbone_spec(hf_config.model_type)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, device)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    if device is not None:
        model.to(device)
    model.eval()
    processor = AutoProcessor.from_pretrained(name)
    processor.tokenizer.padding_side = "left"
    if hasattr(processor, "padding_side"):
        processor.padding_side = "left"
    apply_image_budget(
        processor,
        min_pixels if min_pixels is not None else spec.min_pixels,
        max_pixels if max_pixels is not None else spec.max_pixels,
    )
    return model, processor, spec


def text_hidden_size(model: Any) -> int:
    """Hidden size of the language model (top-level ``config.hidden_size`` is ``None`` for these LVLMs)."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.hidden_size)


def split_deepstack(features: torch.Tensor, hidden: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Split vision features (tokens, hidden · (1 + D)) into the merger output and its D DeepStack levels.

    :meth:`~skylink_model.model.SkyLinkModel.encode_images` keeps Qwen3-VL's DeepStack features (added to the image
    tokens' hidden states after each of the first D language layers) beside the merger output, side by side in one
    tensor, so that they travel together through every cache; other families have D = 0.
    """
    if features.shape[-1] % hidden:
        raise ValueError(f"vision features of width {features.shape[-1]} do not split into levels of {hidden}.")
    levels = list(features.split(hidden, dim=-1))
    return levels[0], levels[1:]
