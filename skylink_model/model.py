"""The SkyLink re-ranker: an LVLM with LoRA and a bias-free scalar value head (SkyLink, arXiv 2603.08063).

One prompt per (query, candidate) pair, query image first so the k prompts of a group share a prefix::

    <query image> Does the given query image match the following reference image? <candidate image>

rendered with the backbone's chat template (generation prompt included), left-padded. The score is
S = wᵀh_last: a bias-free ``Linear(hidden, 1)`` in float32 on the last token's final hidden state, computed from
the base model without its ``lm_head`` (no vocabulary logits are ever computed). The head may start as
``lm_head[yes] − lm_head[no]`` so the untrained model is a yes/no judge.

Saved as the peft adapter (``adapter_config.json`` + ``adapter_model.safetensors``), ``value_head.safetensors`` and
``skylink_config.json`` (base model, prompt, image budget). The processor is always reloaded from the base model.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skylink_model.backbones import BackboneSpec, load_backbone, split_deepstack, text_hidden_size
from skylink_model.config import SkyLinkConfig
from skyrank.errors import CheckpointMismatchError

VALUE_HEAD_NAME = "value_head.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_HEAD_KEY = "value_head.weight"


@dataclass
class ProcessedImage:
    """One image after the image processor and the number of image tokens it takes in the prompt.

    Qwen families (``image_layout="grid"``): ``pixel_values`` (patches, dim) and ``image_grid_thw`` (3,).
    LLaVA-OneVision (``"base"``): ``pixel_values`` (1, channels, height, width), the base-resolution view that the
    multi-image path encodes, and ``image_size`` (2,), the original (height, width).
    """

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor | None
    tokens: int
    image_size: torch.Tensor | None = None

    @property
    def num_patches(self) -> int:
        return int(self.pixel_values.shape[0])


def lora_target_pattern(spec: BackboneSpec, targets: Sequence[str], *, vision: bool) -> str:
    """The peft ``target_modules`` regex: the given layer names inside the language tower (and the vision tower)."""
    towers = [spec.language_prefix] + ([spec.vision_prefix] if vision else [])
    tower_re = "|".join(re.escape(t) for t in towers)
    names_re = "|".join(re.escape(t) for t in targets)
    return rf"^(?:{tower_re})\..*\.(?:{names_re})$"


def _yes_no_direction(backbone: Any, tokenizer: Any, spec: BackboneSpec) -> torch.Tensor:
    ids = []
    for word in (spec.yes_token, spec.no_token):
        tok_ids = tokenizer.encode(word, add_special_tokens=False)
        if len(tok_ids) != 1:
            raise ValueError(
                f"head_init='yes-no' needs {word!r} to be one token, but the tokenizer gives {tok_ids}. "
                "Use head_init='zero' or 'random'."
            )
        ids.append(tok_ids[0])
    emb = backbone.get_output_embeddings()
    weight = emb.weight if emb is not None else backbone.get_input_embeddings().weight
    with torch.no_grad():
        return (weight[ids[0]].float() - weight[ids[1]].float()).detach().clone()


def pair_template_text(processor: Any, prompt: str) -> str:
    """Render one pair's prompt with the processor's chat template, keeping query image → prompt → candidate."""

    def render(content: list[dict[str, str]]) -> str:
        conversation = [{"role": "user", "content": content}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    image, text = {"type": "image"}, {"type": "text", "text": prompt}
    token = processor.image_token
    rendered = render([image, text, image])
    parts = rendered.split(token)
    if len(parts) == 3 and prompt in parts[1]:
        return rendered
    single = render([image, text])  # the template reorders images: place the candidate after the prompt
    parts = single.split(token)
    if len(parts) != 2 or single.count(prompt) != 1 or prompt not in parts[1]:
        raise ValueError(
            f"The chat template of {type(processor).__name__} cannot render '<image> prompt <image>' in this order: "
            f"{rendered!r}"
        )
    after = parts[1].split(prompt)[0]  # what the template puts between an image and the text
    sep = after if after.strip() == "" else ""
    return single.replace(prompt, prompt + sep + token, 1)


class SkyLinkModel(nn.Module):
    """LVLM + LoRA + value head. Build with :func:`get_skylink_model` or :meth:`from_pretrained`.

    Attributes:
        backbone: the ``peft.PeftModel`` around the ``...ForConditionalGeneration``.
        value_head: ``nn.Linear(hidden, 1, bias=False)`` in float32 (S = wᵀh_last).
        processor: the backbone's processor (left padding, image budget applied).
        config: the :class:`SkyLinkConfig`; spec: the family's :class:`BackboneSpec`.
    """

    def __init__(self, backbone: Any, processor: Any, config: SkyLinkConfig, spec: BackboneSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.processor = processor
        self.config = config
        self.spec = spec
        hidden = text_hidden_size(backbone.get_base_model())
        self.value_head = nn.Linear(hidden, 1, bias=False, dtype=torch.float32)
        self.value_head.to(self.device)
        self._template_parts: tuple[list[int], list[int], list[int]] | None = None
        self._template_text: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.value_head.in_features)

    @property
    def base(self) -> Any:
        """The base multimodal model without ``lm_head`` (e.g. ``Qwen2VLModel``), LoRA layers injected."""
        return self.backbone.get_base_model().model

    @property
    def supports_shared_vision(self) -> bool:
        return bool(self.spec.shared_vision)

    @property
    def supports_shared_prefix(self) -> bool:
        """One prefix forward per group, the k continuations on its cache (:mod:`skylink_model.prefix`)."""
        from skylink_model.prefix import supports_shared_prefix

        return supports_shared_prefix(self)

    # ------------------------------------------------------------------ set-up helpers
    def init_value_head(self, mode: str, *, seed: int = 0) -> None:
        """Initialise w: ``"yes-no"`` (lm_head[yes] − lm_head[no]), ``"zero"`` or ``"random"`` (seeded)."""
        with torch.no_grad():
            if mode == "yes-no":
                direction = _yes_no_direction(self.backbone.get_base_model(), self.processor.tokenizer, self.spec)
                self.value_head.weight.copy_(direction.view(1, -1))
            elif mode == "zero":
                self.value_head.weight.zero_()
            elif mode == "random":
                gen = torch.Generator().manual_seed(seed)
                w = torch.randn(1, self.hidden_size, generator=gen) / self.hidden_size**0.5
                self.value_head.weight.copy_(w)
            else:
                raise ValueError(f"`head_init` must be one of yes-no, zero, random, got {mode!r}.")

    def enable_gradient_checkpointing(self) -> None:
        """Non-reentrant gradient checkpointing on the backbone (with input grads, for PEFT)."""
        base = self.backbone.get_base_model()
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
        base.config.use_cache = False

    def lora_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.backbone.named_parameters() if "lora_" in n}

    # ------------------------------------------------------------------ inputs
    @property
    def template_text(self) -> str:
        """The chat-template text of one pair: ``<query image> {prompt} <candidate image>``, generation prompt.

        Templates that render every image before the text (LLaVA-OneVision's) would lose the paper's order; for
        them the template is rendered for ``<query image> {prompt}`` and the candidate's placeholder is put right
        after the prompt, separated as the template separates an image from text.
        """
        if self._template_text is None:
            self._template_text = pair_template_text(self.processor, self.config.prompt)
        return self._template_text

    def build_pair_inputs(self, query_images: Sequence[Any], candidate_images: Sequence[Any]) -> Any:
        """Tokenise one prompt per pair, ``<query image> {prompt} <candidate image>``, with the processor.

        Returns the processor's ``BatchFeature`` (``input_ids``, ``attention_mask``, ``mm_token_type_ids``,
        ``pixel_values``, ``image_grid_thw``, ...), left-padded, on the model's device.
        """
        if len(query_images) != len(candidate_images):
            raise ValueError(f"{len(query_images)} query images but {len(candidate_images)} candidate images.")
        if not query_images:
            raise ValueError("build_pair_inputs needs at least one pair.")
        # One image list per prompt: LLaVA-OneVision then takes its multi-image path (base resolution per image)
        # instead of treating each image as a single-image request (anyres tiling); Qwen processors flatten it.
        images = [[q, c] for q, c in zip(query_images, candidate_images, strict=True)]
        batch = self.processor(
            text=[self.template_text] * len(query_images),
            images=images,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return batch.to(self.device)

    def process_images(self, images: Sequence[Any]) -> list[ProcessedImage]:
        """Run the image processor once per image; the result can be cached across queries.

        LLaVA-OneVision's images go in as one multi-image request (a lone image twice), as a pair's two images do in
        :meth:`build_pair_inputs`: each is padded to square at the base resolution, never tiled.
        """
        self._require_shared_vision()
        images = list(images)
        if self.spec.image_layout == "base":
            request = [images if len(images) > 1 else images * 2]  # one request of several images
            out = self.processor.image_processor(images=request, return_tensors="pt")
            tokens = self._base_image_tokens()
            pairs = zip(out["pixel_values"][: len(images)], out["image_sizes"][: len(images)], strict=True)
            return [ProcessedImage(pv[:1], None, tokens, size) for pv, size in pairs]
        out = self.processor.image_processor(images=images, return_tensors="pt")
        grids = out["image_grid_thw"]
        sizes = grids.prod(-1).tolist()
        merge = int(self.processor.image_processor.merge_size) ** 2
        chunks = torch.split(out["pixel_values"], sizes)
        return [ProcessedImage(pv, g, int(pv.shape[0]) // merge) for pv, g in zip(chunks, grids, strict=True)]

    def _base_image_tokens(self) -> int:
        """Image tokens of one image on LLaVA-OneVision's multi-image path, by the processor's own rule."""
        text = self.processor.replace_image_token({"batch_num_images": [2]}, 0)
        return text.count(self.processor.image_token)

    def _require_shared_vision(self) -> None:
        if not self.supports_shared_vision:
            family = self.backbone.get_base_model().config.model_type
            raise NotImplementedError(
                f"Vision-feature reuse is not implemented for the {family!r} family; use shared_vision=False."
            )

    def _template_ids(self) -> tuple[list[int], list[int], list[int]]:
        if self._template_parts is None:
            tok = self.processor.tokenizer
            pad = self.processor.image_token
            parts = self.template_text.split(pad)
            if len(parts) != 3:
                raise ValueError(f"The chat template should hold two {pad} placeholders, got {len(parts) - 1}.")
            self._template_parts = tuple(tok.encode(p, add_special_tokens=False) for p in parts)  # type: ignore[assignment]
        return self._template_parts  # type: ignore[return-value]

    def pair_inputs_from_processed(
        self,
        queries: Sequence[ProcessedImage],
        candidates: Sequence[ProcessedImage],
        *,
        with_pixels: bool = True,
    ) -> dict[str, Any]:
        """Build the same inputs as :meth:`build_pair_inputs` from pre-processed images (no processor call).

        The image placeholder is expanded to each image's ``tokens`` (Qwen: ``prod(image_grid_thw) / merge_size²``;
        LLaVA-OneVision: features + newline), as the processor does; the result is left-padded.
        ``with_pixels=False`` leaves the pixels out (``mm_encoder_outputs``).
        """
        self._require_shared_vision()
        pre, mid, post = self._template_ids()
        image_id = int(self.backbone.get_base_model().config.image_token_id)
        pad_id = self.processor.tokenizer.pad_token_id
        rows = []
        for q, c in zip(queries, candidates, strict=True):
            rows.append(pre + [image_id] * q.tokens + mid + [image_id] * c.tokens + post)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, length - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, length - len(r) :] = 1
        device = self.device
        inputs: dict[str, Any] = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
        images = [image for q, c in zip(queries, candidates, strict=True) for image in (q, c)]
        if self.spec.image_layout == "base":
            if with_pixels:  # the processor's multi-image layout: (images, 1 view, C, H, W), two images per prompt
                inputs["pixel_values"] = torch.stack([p.pixel_values for p in images]).to(device)
                inputs["image_sizes"] = torch.stack([p.image_size for p in images]).to(device)
                inputs["batch_num_images"] = torch.full((len(rows),), 2, dtype=torch.long, device=device)
            return inputs
        inputs["mm_token_type_ids"] = (input_ids == image_id).long().to(device)
        inputs["image_grid_thw"] = torch.stack([p.image_grid_thw for p in images]).to(device)
        if with_pixels:
            inputs["pixel_values"] = torch.cat([p.pixel_values for p in images]).to(device)
        return inputs

    # ------------------------------------------------------------------ scoring
    def forward(self, **inputs: Any) -> torch.Tensor:
        """Scores S = wᵀh_last, shape (B,), float32. Inputs as from :meth:`build_pair_inputs` (left padding);
        ``mm_encoder_outputs`` (precomputed vision features) may replace ``pixel_values``. Inputs from
        :meth:`group_inputs` (``prefix_input_ids`` …) score one group on its shared prefix, in this one call."""
        from skylink_model.prefix import PREFIX_KEY, shared_prefix_hidden

        if PREFIX_KEY in inputs:
            return self.head_scores(shared_prefix_hidden(self, **inputs))
        attention_mask = inputs.get("attention_mask")
        if attention_mask is not None and not bool(attention_mask[:, -1].all()):
            raise ValueError("SkyLink scores the last token: inputs must be left-padded (padding_side='left').")
        inputs.pop("labels", None)
        inputs.pop("use_cache", None)
        out = self.base(**inputs, use_cache=False, return_dict=True)
        return self.head_scores(out.last_hidden_state[:, -1])

    def head_scores(self, h_last: torch.Tensor) -> torch.Tensor:
        """S = wᵀh_last in float32 whatever the mode, shape (B,).

        Autocast is switched off for the head and both operands are upcast, so plain fp32, ``accelerator.autocast()``
        (bf16/fp16), a backbone loaded in bf16/fp16 and DeepSpeed's whole-module cast (which turns ``w`` into bf16
        storage; its fp32 master copy lives in the optimizer) all score with the same fp32 product.
        """
        with torch.autocast(device_type=h_last.device.type, enabled=False):
            weight = self.value_head.weight
            return nn.functional.linear(h_last.float(), weight.float()).squeeze(-1)

    def group_inputs(
        self,
        query: ProcessedImage,
        candidates: Sequence[ProcessedImage],
        *,
        query_features: torch.Tensor | None = None,
        candidate_features: Sequence[torch.Tensor] | None = None,
        chunk_size: int | None = None,
    ) -> dict[str, Any]:
        """Inputs of :meth:`forward` that score one group on its shared prefix (:mod:`skylink_model.prefix`).

        Without precomputed features the pixels are included, and the forward encodes query and candidates in one
        vision pass (with autograd: training). ``chunk_size`` runs the continuations in batches of that many rows.
        """
        from skylink_model.prefix import build_group_inputs

        inputs = build_group_inputs(self, query, candidates)
        device = self.device
        if query_features is None:
            inputs["query_pixel_values"] = query.pixel_values.to(device)
        else:
            inputs["query_features"] = query_features
        if candidate_features is None:
            inputs["pixel_values"] = torch.cat([c.pixel_values for c in candidates]).to(device)
        else:
            inputs["candidate_features"] = torch.cat(list(candidate_features))
        inputs["chunk_size"] = chunk_size
        return inputs

    def encode_images(self, processed: Sequence[ProcessedImage]) -> list[torch.Tensor]:
        """Vision features per image, (tokens, hidden · (1 + DeepStack levels)), one vision pass for the whole list.

        These are what the language model reads at the image tokens: the merger output (Qwen; with Qwen3-VL's
        DeepStack levels beside it,
        :func:`~skylink_model.backbones.split_deepstack`) or the projector output plus the image-newline row
        (LLaVA-OneVision). They are what :class:`~skylink_model.rerank.FeatureCache` stores.
        """
        self._require_shared_vision()
        device = self.device
        pv = torch.cat([p.pixel_values for p in processed]).to(device)
        grid = None
        if self.spec.image_layout == "grid":
            grid = torch.stack([p.image_grid_thw for p in processed]).to(device)
        return self.vision_features(pv, grid)

    def vision_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None) -> list[torch.Tensor]:
        """:meth:`encode_images` on raw tensors: Qwen patches + ``image_grid_thw``, or LLaVA-OneVision base views
        (images, C, H, W) encoded as its multi-image path does (selected vision layer, projector, newline row)."""
        base = self.base
        if self.spec.image_layout == "base":
            config = base.config
            layer = config.vision_feature_layer
            out = base.vision_tower(pixel_values.to(base.vision_tower.dtype), output_hidden_states=layer,
                                    return_dict=True)  # fmt: skip
            if isinstance(layer, int):
                selected = out.hidden_states[layer]
            else:
                selected = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
            if config.vision_feature_select_strategy == "default":
                selected = selected[:, 1:]
            feats = base.multi_modal_projector(selected)
            newline = base.image_newline[None].to(feats.dtype)
            return [torch.cat([f, newline]) for f in feats]
        out = base.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        levels = getattr(out, "deepstack_features", None) or []
        if not levels:
            return list(out.pooler_output)
        return [torch.cat([main, *(level[i] for level in levels)], dim=-1) for i, main in enumerate(out.pooler_output)]

    def mm_encoder_outputs(self, features: Sequence[torch.Tensor]) -> dict[str, Any]:
        """``mm_encoder_outputs`` of the base model's forward from :meth:`encode_images` features (prompt order)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        split = [split_deepstack(f, self.hidden_size) for f in features]
        pooled = [main for main, _ in split]
        if not any(levels for _, levels in split):
            return {"image": BaseModelOutputWithPooling(pooler_output=pooled)}
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        deepstack = [list(level) for level in zip(*(levels for _, levels in split), strict=True)]
        return {"image": BaseModelOutputWithDeepstackFeatures(pooler_output=pooled, deepstack_features=deepstack)}

    def vision_parameters(self) -> list[nn.Parameter]:
        """The parameters that shape :meth:`encode_images`: the vision tower (and LLaVA-OneVision's projector and
        image-newline row)."""
        params = list(self.backbone.get_base_model().get_submodule(self.spec.vision_prefix).parameters())
        base = self.base
        if self.spec.image_layout == "base":
            params += list(base.multi_modal_projector.parameters()) + [base.image_newline]
        return params

    def score_group(
        self,
        query_image: Any,
        candidate_images: Sequence[Any],
        *,
        shared_vision: bool | None = None,
        query: ProcessedImage | None = None,
        candidates: Sequence[ProcessedImage] | None = None,
        query_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score one query against its candidates, shape (n,) float32, with autograd (training or inference).

        With ``shared_vision`` (default: ``config.shared_vision`` where the family supports it) the query image is
        processed and encoded by the vision tower once and its features are reused for every pair through
        ``mm_encoder_outputs``; otherwise every pair is a full forward. Pre-processed images / query features may be
        passed to skip work (see :mod:`skylink_model.rerank`).
        """
        n = len(candidate_images) if candidates is None else len(candidates)
        if n == 0:
            return torch.zeros(0, dtype=torch.float32, device=self.device)
        if shared_vision is None:
            shared_vision = self.config.shared_vision and self.supports_shared_vision
        if not shared_vision:
            return self(**self.build_pair_inputs([query_image] * n, list(candidate_images)))
        if query is None:
            query = self.process_images([query_image])[0]
        if candidates is None:
            candidates = self.process_images(list(candidate_images))
        if query_features is None:
            query_features = self.encode_images([query])[0]
        cand_features = self.encode_images(candidates)
        pooled: list[torch.Tensor] = []
        for feat in cand_features:
            pooled.extend((query_features, feat))
        inputs = self.pair_inputs_from_processed([query] * n, candidates, with_pixels=False)
        inputs["mm_encoder_outputs"] = self.mm_encoder_outputs(pooled)
        return self(**inputs)

    @torch.inference_mode()
    def score_pairs(
        self, query_images: Sequence[Any], candidate_images: Sequence[Any], batch_size: int = 16
    ) -> torch.Tensor:
        """Scores of independent pairs (naive path, no reuse) in batches, on the CPU, float32, shape (N,)."""
        if len(query_images) != len(candidate_images):
            raise ValueError(f"{len(query_images)} query images but {len(candidate_images)} candidate images.")
        out = []
        for start in range(0, len(query_images), batch_size):
            inputs = self.build_pair_inputs(
                query_images[start : start + batch_size], candidate_images[start : start + batch_size]
            )
            out.append(self(**inputs).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | Path, *, head_weight: torch.Tensor | None = None) -> Path:
        """Write the adapter, ``value_head.safetensors`` (float32) and ``skylink_config.json`` (image budget).

        ``head_weight`` replaces the module's w, e.g. DeepSpeed's fp32 master copy when the engine holds the module
        in bf16.
        """
        from safetensors.torch import save_file

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out)
        w = self.value_head.weight if head_weight is None else head_weight
        weight = w.detach().to("cpu", torch.float32).reshape(1, self.hidden_size).contiguous()
        save_file({_HEAD_KEY: weight}, str(out / VALUE_HEAD_NAME), metadata={"hidden_size": str(self.hidden_size)})
        size = self.processor.image_processor.size
        budget = {}
        for key, name in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
            value = size.get(key) if hasattr(size, "get") else getattr(size, key, None)
            if value is not None:
                budget[name] = int(value)
        dataclasses.replace(self.config, **budget).save_pretrained(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        base_model: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        is_trainable: bool = False,
    ) -> SkyLinkModel:
        """Reload a saved run folder on its base model (or ``base_model``) with ``PeftModel.from_pretrained``; scores
        are reproduced exactly.

        Raises :class:`CheckpointMismatchError` naming the hidden sizes or the missing/unexpected adapter keys when
        the base model does not fit the checkpoint.
        """
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors import safe_open
        from safetensors.torch import load_file

        folder = Path(directory)
        for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, VALUE_HEAD_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a SkyLink run folder: {name} is missing.")
        config = SkyLinkConfig.from_pretrained(folder)
        overrides: dict[str, Any] = {}
        if base_model is not None:
            overrides["base_model"] = str(base_model)
        if dtype is not None:
            overrides["dtype"] = dtype
        if attn_implementation is not None:
            overrides["attn_implementation"] = attn_implementation
        config = dataclasses.replace(config, **overrides)

        backbone, processor, spec = load_backbone(
            config.base_model,
            dtype=config.dtype,
            attn_implementation=config.attn_implementation,
            device=device,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )
        head = load_file(str(folder / VALUE_HEAD_NAME))
        if set(head) != {_HEAD_KEY}:
            raise CheckpointMismatchError(
                f"{folder / VALUE_HEAD_NAME} should hold exactly {_HEAD_KEY!r}, found {sorted(head)}."
            )
        hidden = text_hidden_size(backbone)
        if tuple(head[_HEAD_KEY].shape) != (1, hidden):
            raise CheckpointMismatchError(
                f"The value head in {folder} was trained for hidden size {head[_HEAD_KEY].shape[-1]}, but base model "
                f"{config.base_model!r} has hidden size {hidden}. Pass the base model the run was trained on."
            )

        try:
            with warnings.catch_warnings():  # missing adapter keys are refused below, naming them
                warnings.filterwarnings("ignore", message="Found missing adapter keys")
                peft_model = PeftModel.from_pretrained(
                    backbone, str(folder), is_trainable=is_trainable,
                    torch_device=str(next(backbone.parameters()).device),
                )
        except ValueError as err:  # peft: the adapter's target modules are not in this base model
            raise CheckpointMismatchError(
                f"The adapter in {folder} does not fit base model {config.base_model!r}: {err}"
            ) from err
        except RuntimeError as err:  # torch's load_state_dict: size mismatches
            raise CheckpointMismatchError(
                f"Adapter shapes in {folder} do not match {config.base_model!r}: {err}"
            ) from err
        # peft only warns about adapter keys the file lacks (and ignores those the base model lacks): refuse both.
        with safe_open(str(folder / ADAPTER_WEIGHTS_NAME), framework="pt") as f:
            saved_keys = set(f.keys())
        expected = set(get_peft_model_state_dict(peft_model).keys())
        missing, unexpected = sorted(expected - saved_keys), sorted(saved_keys - expected)
        if missing or unexpected:
            raise CheckpointMismatchError(
                f"The adapter in {folder} does not match base model {config.base_model!r}: "
                f"{len(missing)} missing key(s) {missing[:8]}, {len(unexpected)} unexpected key(s) {unexpected[:8]}."
            )

        model = cls(peft_model, processor, config, spec)
        with torch.no_grad():
            model.value_head.weight.copy_(head[_HEAD_KEY].to(model.value_head.weight.device))
        model.eval()
        if is_trainable and config.gradient_checkpointing and model.device.type == "cuda":
            model.enable_gradient_checkpointing()
        return model


def get_skylink_model(config: SkyLinkConfig, *, device: str | torch.device | None = None) -> SkyLinkModel:
    """Build a fresh SkyLink model: backbone + LoRA (targets from the config or the family default) + value head.

    Every backbone parameter is frozen except the LoRA matrices; the value head is trainable. Gradient
    checkpointing is switched on when ``config.gradient_checkpointing`` is set.
    """
    from peft import LoraConfig, get_peft_model

    backbone, processor, spec = load_backbone(
        config.base_model,
        dtype=config.dtype,
        attn_implementation=config.attn_implementation,
        device=device,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
    )
    targets = list(config.lora_targets) if config.lora_targets is not None else list(spec.lora_targets)
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_target_pattern(spec, targets, vision=config.lora_vision),
        bias="none",
    )
    peft_model = get_peft_model(backbone, lora_config)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    towers = [("language", spec.language_prefix)] + ([("vision", spec.vision_prefix)] if config.lora_vision else [])
    for tower, prefix in towers:
        if not any(f".{prefix}." in f".{n}" for n in lora_names):
            raise ValueError(
                f"LoRA targets {targets} matched no layer of the {tower} tower ({prefix}) of {config.base_model!r}."
            )
    model = SkyLinkModel(peft_model, processor, config, spec)
    model.init_value_head(config.head_init, seed=config.seed)
    model.train()
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model
