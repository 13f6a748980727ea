"""The SkyLink configuration: one dataclass, saved beside every run as ``skylink_config.json``.

Defaults follow the SkyLink paper (arXiv 2603.08063): groups of k = 13 candidates (|G_z|, Eq. 3), soft-label
threshold T = 0.9 (Eq. 7), LoRA r = 16 / alpha = 32 / dropout 0.05 on the language q/k/v and the vision tower,
AdamW lr 1e-4, 4 groups per optimizer step, 1 epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank.format.rules import LABEL_MODES as LABEL_MODES  # the label rule's modes (Eq. 7 and ablations)

CONFIG_NAME = "skylink_config.json"

DEFAULT_PROMPT = "Does the given query image match the following reference image?"

#: ``prompt="views"``: a pair prompt that names both views (:func:`view_prompt`), resolved from the training data.
PROMPT_VIEWS = "views"

#: How prompts name each view (issue 20); ``ground`` is a street-view panorama or photo (:func:`view_phrase`).
VIEW_PHRASES: dict[str, str] = {"drone": "drone-view", "satellite": "satellite-view", "ground": "street-view"}


def view_phrase(view: str, *, panorama: bool = False) -> str:
    """The words a prompt uses for one view: ``drone-view``, ``satellite-view``, ``street-view`` (a ground photo,
    University-1652's street views) or ``street-view panorama`` (VIGOR, CVUSA, CVACT)."""
    if view not in VIEW_PHRASES:
        raise ValueError(f"view must be one of {', '.join(VIEW_PHRASES)}, got {view!r}")
    return "street-view panorama" if view == "ground" and panorama else VIEW_PHRASES[view]


def view_prompt(query_view: str, candidate_view: str, *, panorama: bool = False) -> str:
    """The pair prompt naming the views, e.g. "Does the given street-view panorama query image match the following
    satellite-view reference image?" (``panorama`` applies to a ground view)."""
    q = view_phrase(query_view, panorama=panorama)
    c = view_phrase(candidate_view, panorama=panorama)
    return f"Does the given {q} query image match the following {c} reference image?"


def resolve_prompt(prompt: str, query_view: str | None, candidate_view: str | None, *, panorama: bool = False) -> str:
    """The pair prompt a run trains with (and saves in ``skylink_config.json``, so evaluation uses the same).

    ``"views"``: :func:`view_prompt` of the data's views. The default (:data:`DEFAULT_PROMPT`, the paper's, which
    names no view) is kept for drone/satellite data (SkyLink's Table 1) and becomes :func:`view_prompt` for a
    ground-level query (a street panorama or photo against satellite tiles), which the paper's prompt never saw.
    Any other text is used as given.
    """
    if prompt not in (DEFAULT_PROMPT, PROMPT_VIEWS) or query_view is None or candidate_view is None:
        if prompt == PROMPT_VIEWS:
            raise ValueError("prompt='views' needs the data's query and candidate views")
        return prompt
    if prompt == PROMPT_VIEWS or "ground" in (query_view, candidate_view):
        return view_prompt(query_view, candidate_view, panorama=panorama)
    return prompt

HEAD_INITS = ("yes-no", "zero", "random")
LR_SCHEDULERS = ("linear", "cosine", "constant")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class SkyLinkConfig:
    """Everything needed to build, train and reload a SkyLink re-ranker.

    Args:
        base_model: Hub id or local folder of the LVLM backbone.
        k: Candidates per training group |G_z| (Eq. 3): the ground truth plus the top-(k-1) hard negatives.
        threshold: Soft-label threshold T (Eq. 7).
        labels: ``"soft"`` (Eq. 7), ``"hard"`` (1 above T) or ``"gt-only"`` (no threshold; paper ablations).
        lora_r / lora_alpha / lora_dropout: LoRA hyper-parameters.
        lora_targets: Module names (last path component) that get LoRA; ``None`` uses the family default.
        lora_vision: Also put LoRA on the vision tower.
        prompt: The text between the query image and the candidate image.
        min_pixels / max_pixels: Image budget per image; ``None`` uses the family default.
        head_init: Initialisation of the value head w (S = wᵀh_last).
    """

    base_model: str = field(
        default="Qwen/Qwen2-VL-7B-Instruct",
        metadata={"help": "Hub id or local folder of the LVLM backbone (SkyLink: Qwen/Qwen2-VL-7B-Instruct)."},
    )
    k: int = field(default=13, metadata={"help": "Candidates per training group |G_z| (Eq. 3). SkyLink uses 13."})
    threshold: float = field(
        default=0.9,
        metadata={"help": "Soft-label threshold T (Eq. 7): L_j = sim_j if sim_j > T else 0. SkyLink uses 0.9."},
    )
    labels: str = field(
        default="soft",
        metadata={"help": "Label mode: 'soft' (Eq. 7), 'hard' (1 above T) or 'gt-only' (only the ground truth)."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (SkyLink uses 16)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (SkyLink uses 32)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (SkyLink uses 0.05)."})
    lora_targets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Last path components of the Linear layers that get LoRA (e.g. q_proj, k_proj, v_proj, qkv); "
            "None uses the backbone family's default from skylink_model.backbones.BACKBONE_DEFAULTS."
        },
    )
    lora_vision: bool = field(
        default=True, metadata={"help": "Also apply LoRA to the vision tower's attention (SkyLink does)."}
    )
    prompt: str = field(
        default=DEFAULT_PROMPT,
        metadata={
            "help": "Text placed between the query image and the candidate image (one prompt per pair); 'views' "
            "names the data's views (the default does so by itself for street-view queries; resolve_prompt)."
        },
    )
    min_pixels: int | None = field(
        default=None, metadata={"help": "Minimum pixels per image after resizing; None uses the family default."}
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Maximum pixels per image after resizing (the image-token budget); None: family default."},
    )
    head_init: str = field(
        default="yes-no",
        metadata={
            "help": "Value-head init: 'yes-no' (lm_head[yes] - lm_head[no], a calibrated yes/no judge at step 0), "
            "'zero' or 'random'."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "dtype: 'auto' (bfloat16 on CUDA, else float32), 'float32', 'bfloat16', 'float16'."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel ('sdpa', 'eager', 'flash_attention_2'); None: default."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (SkyLink uses 1e-4)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (the paper states none; 0)."})
    warmup_ratio: float = field(
        default=0.03,
        metadata={"help": "Fraction of optimizer steps used for linear warmup (the paper states none; 0.03)."},
    )
    lr_scheduler: str = field(
        default="linear",
        metadata={"help": "Decay after warmup: 'linear', 'cosine' or 'constant' (the paper states none; linear)."},
    )
    batch_size: int = field(
        default=4, metadata={"help": "Effective number of groups per optimizer step (SkyLink uses 4)."}
    )
    micro_batch_size: int | None = field(
        default=None,
        metadata={"help": "Pairs per forward pass (a group's k pairs may be split, gradients accumulated); None: k."},
    )
    epochs: int = field(default=1, metadata={"help": "Training epochs (SkyLink uses 1)."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None disables it."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Non-reentrant gradient checkpointing of the backbone (GPU memory)."}
    )
    shared_vision: bool = field(
        default=True,
        metadata={"help": "Encode each query image once per group and reuse its vision features for all k pairs."},
    )
    train_fraction: float = field(
        default=1.0, metadata={"help": "Fraction of training queries used (data-efficiency study)."}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of the training queries (whole locations) held out of training as validation "
            "queries, on which `skyrank eval --fuse auto` chooses the fusion weight; 0 trains on all (the paper)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Random seed (head init, data order, validation split)."})
    loss: str = field(
        default="bce",
        metadata={
            "help": "Training loss (skylink_model.losses.LOSSES): 'bce' (the paper's Eq. 8 on the labels) or "
            "'plackett-luce' (GeoRanker's listwise loss, the ground truth first)."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.base_model, str) or not self.base_model:
            raise ValueError(f"`base_model` must be a non-empty hub id or folder, got {self.base_model!r}.")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 2:
            raise ValueError(f"`k` must be ≥ 2, got {self.k}.")
        if not (0.0 < float(self.threshold) <= 1.0) or math.isnan(float(self.threshold)):
            raise ValueError(f"`threshold` must be in (0, 1], got {self.threshold}.")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"`labels` must be one of {', '.join(LABEL_MODES)}, got {self.labels!r}.")
        if self.lora_r < 1:
            raise ValueError(f"`lora_r` must be ≥ 1, got {self.lora_r}.")
        if self.lora_alpha <= 0:
            raise ValueError(f"`lora_alpha` must be > 0, got {self.lora_alpha}.")
        if not (0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_targets is not None:
            if isinstance(self.lora_targets, str):
                self.lora_targets = [t for t in self.lora_targets.split(",") if t.strip()]
            self.lora_targets = [t.strip() for t in self.lora_targets]
            if not self.lora_targets:
                raise ValueError("`lora_targets` must name at least one module, or be None for the family default.")
            if "proj" in self.lora_targets:
                raise ValueError(
                    "`lora_targets` must not contain a bare 'proj': it also matches the vision patch-embedding "
                    "Conv3d (`patch_embed.proj`). Name the attention layers (q_proj, k_proj, v_proj, qkv)."
                )
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("`prompt` must be a non-empty string.")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be ≥ 1 or None, got {value}.")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"`min_pixels` ({self.min_pixels}) must be ≤ `max_pixels` ({self.max_pixels}).")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"`head_init` must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}, got {self.dtype!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"`weight_decay` must be ≥ 0, got {self.weight_decay}.")
        if not (0.0 <= self.warmup_ratio < 1.0):
            raise ValueError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"`lr_scheduler` must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be ≥ 1, got {self.batch_size}.")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"`micro_batch_size` must be ≥ 1 or None, got {self.micro_batch_size}.")
        if self.epochs < 1:
            raise ValueError(f"`epochs` must be ≥ 1, got {self.epochs}.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"`max_grad_norm` must be > 0 or None, got {self.max_grad_norm}.")
        if not (0.0 <= self.val_fraction < 1.0):
            raise ValueError(f"`val_fraction` must be in [0, 1), got {self.val_fraction}.")
        if not (0.0 < self.train_fraction <= 1.0):
            raise ValueError(f"`train_fraction` must be in (0, 1], got {self.train_fraction}.")
        from skylink_model.losses import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}, got {self.loss!r}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkyLinkConfig:
        """Build a config from a dict; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown SkyLinkConfig field(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
            )
        return cls(**data)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``skylink_config.json`` into ``save_directory`` (created if needed) and return its path."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SkyLinkConfig:
        """Read ``skylink_config.json`` from a run folder (or the file itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} at {path}: is this a SkyLink run folder?")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
