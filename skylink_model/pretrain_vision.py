"""Contrastive pre-training of a random backbone's vision tower: ``skyrank demo``'s stand-in for a pretrained LVLM.

SkyLink fine-tunes a *pretrained* LVLM (arXiv 2603.08063: Qwen2-VL-7B-Instruct, whose ViT starts from a
contrastively trained CLIP-style encoder) with LoRA. A randomly initialised tiny Qwen2-VL has no visual features to
adapt: trained with Eq. 8 alone on CPU it sat on the constant-prediction plateau (BCE 0.376 for a 1-in-8 positive)
for most of its budget and re-ranked barely better than a random order (BENCHMARKS.md, "skyrank demo"). This module
gives such a backbone's vision tower the kind of start a real one has, on the training split only:

    L = 1/2 [ CE(s · E_q E_gᵀ, I) + CE(s · E_g E_qᵀ, I) ]          (symmetric InfoNCE, label smoothing 0.1)

over a batch of B training locations, one query view and the location's gallery image each; E is the mean of an
image's merged vision tokens (the features the language model reads), L2-normalised, and s = 1/temperature. It is
Sample4Geo's objective (Deuser et al., ICCV 2023; :func:`skyrank.losses.symmetric_infonce`, with a fixed
temperature) applied to the LVLM's own vision tower (patch embedding, blocks
and merger). The validation locations that ``skyrank train --val-fraction`` holds out are held out here too
(:meth:`skylink_model.data.SkyRankSplit.without_validation`, same fraction and seed); test data is never read.
SkyLink's own training (LoRA + value head, Eq. 8) then starts from the saved backbone.

Qwen-style families only (``get_image_features`` with ``image_grid_thw``), the ones :mod:`skyrank.demo` builds.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

#: The pre-training record written beside the weights.
RECORD_NAME = "pretrain_vision.json"


@dataclass
class VisionPretrainConfig:
    """Settings of :func:`pretrain_vision` (defaults: the demo's, measured in BENCHMARKS.md)."""

    steps: int = 300
    batch_size: int = 32  # locations per step (capped by the number of training locations)
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.1
    label_smoothing: float = 0.1
    val_fraction: float = 0.1  # the SkyLink run's: its validation locations are held out here too
    seed: int = 0
    min_pixels: int | None = None  # the SkyLink run's image budget (None: the family default)
    max_pixels: int | None = None


@dataclass
class VisionPretrainResult:
    out: Path
    losses: list[float] = field(default_factory=list)
    locations: int = 0
    images: int = 0
    seconds: float = 0.0


def _pooled(model: Any, pixel_values: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """One vector per image: the mean of its merged vision tokens (the loss L2-normalises it)."""
    feats = model.get_image_features(pixel_values, grids, return_dict=True).pooler_output
    return torch.stack([f.float().mean(0) for f in feats])


def pretrain_vision(
    base: str | Path,
    data: str | Path,
    config_name: str,
    out: str | Path,
    config: VisionPretrainConfig | None = None,
    *,
    split: str = "train",
    images_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> VisionPretrainResult:
    """Pre-train ``base``'s vision tower on ``data``'s ``split`` (query view ↔ its ground-truth gallery image) and
    write the whole backbone (weights, processor, :data:`RECORD_NAME`) to ``out``, atomically.

    Only the vision tower's parameters change; the language model and ``lm_head`` are copied as they are.
    """
    from tqdm.auto import tqdm

    from skylink_model.backbones import load_backbone
    from skylink_model.data import load_skyrank_split
    from skyrank.atomic import swap_in_dir
    from skyrank.losses import symmetric_infonce

    cfg = config or VisionPretrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError(f"pretrain_vision needs steps >= 1 and batch_size >= 2, got {cfg.steps}, {cfg.batch_size}")
    started = time.perf_counter()
    model, processor, spec = load_backbone(
        base, dtype="float32", device="cpu", min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels
    )
    if spec.image_layout != "grid":
        raise NotImplementedError(
            f"pretrain_vision supports the Qwen-style families (image_grid_thw); {model.config.model_type} is not one"
        )
    rows_split, _ = load_skyrank_split(
        data, config_name, split, images_root=images_root, cache_dir=cache_dir
    ).without_validation(cfg.val_fraction, cfg.seed)
    by_location: dict[str, list[str]] = {}
    for qid, gt in zip(rows_split.rows["query_id"], rows_split.rows["gt_id"], strict=True):
        by_location.setdefault(str(gt), []).append(str(qid))
    if len(by_location) < 2:
        raise ValueError(f"{config_name}/{split} holds {len(by_location)} training location(s); need at least 2")

    # Every image is processed once (the processor costs as much as this tiny model's forward).
    ids = sorted({i for qs in by_location.values() for i in qs} | set(by_location))
    processed = processor.image_processor(images=[rows_split.images(i) for i in ids], return_tensors="pt")
    grids = processed["image_grid_thw"]
    chunks = torch.split(processed["pixel_values"], grids.prod(-1).tolist())
    cache = {i: (pv, g) for i, pv, g in zip(ids, chunks, grids, strict=True)}

    visual = model.get_submodule(spec.vision_prefix)
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for p in visual.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    locations = sorted(by_location)
    batch = min(cfg.batch_size, len(locations))
    result = VisionPretrainResult(Path(out), locations=len(locations), images=len(ids))
    scale = torch.tensor(1.0 / cfg.temperature)  # fixed, where Sample4Geo learns it
    visual.train()
    bar = tqdm(range(cfg.steps), desc="pre-train vision tower", disable=not progress, unit="step")
    for _ in bar:
        chosen = rng.sample(locations, batch)
        images = [cache[rng.choice(by_location[g])] for g in chosen] + [cache[g] for g in chosen]
        emb = _pooled(model, torch.cat([pv for pv, _ in images]), torch.stack([g for _, g in images]))
        loss = symmetric_infonce(emb[:batch], emb[batch:], scale, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        result.losses.append(round(float(loss.detach()), 5))
        bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
    visual.eval()
    for p in params:
        p.requires_grad_(False)
    result.seconds = round(time.perf_counter() - started, 1)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        for extra in Path(base).glob("*.md"):
            shutil.copy2(extra, staging / extra.name)
        record = {
            "objective": "symmetric InfoNCE, query view vs its ground-truth gallery image (Sample4Geo's loss)",
            "base": str(base),
            "data": str(data),
            "config": config_name,
            "split": split,
            "held_out": "the validation locations of skyrank train --val-fraction (same fraction and seed)",
            "locations": result.locations,
            "images": result.images,
            "settings": asdict(cfg),
            "first_loss": result.losses[0],
            "last_loss": result.losses[-1],
            "seconds": result.seconds,
        }
        (staging / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        swap_in_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


__all__ = ["RECORD_NAME", "VisionPretrainConfig", "VisionPretrainResult", "pretrain_vision"]
