"""A memory and time plan of a SkyLink run from the base model's config alone (``skyrank train/eval --plan``).

:func:`estimate` reads only the config (a local folder's ``config.json``, the Hub's when online, else the built-in
published configs of :mod:`skylink_model.published_configs`), builds the architecture on the meta device (no
memory, exact parameter counts) and gives, for one device of the run:

- parameters: total, trainable (LoRA on the backbone table's targets + the value head), frozen;
- tokens: image tokens per image from the image processor's rule (Qwen: ``smart_resize`` to the family's budget,
  patch x merge pixels per token; LLaVA-OneVision: (384/14)^2 = 729 features + 1 newline token), text tokens per
  pair, and per group on the naive path (k full pairs) and the fast path (one prefix + k continuations);
- FLOPs per group (:func:`vision_flops`, :func:`lm_flops`: dense matmuls and attention of both towers; LoRA, norms
  and the image processor left out), training = forward x (2 + 1 with checkpointing): the frozen weights need input
  gradients only, checkpointing replays each layer once;
- memory per device (GiB): weights; LoRA state (fp32 weights, gradients and two AdamW moments; ZeRO-2 shards the
  gradients and moments over the GPUs); activations with and without gradient checkpointing (training) or the
  largest transient (scoring); the gallery vision-feature cache (scoring); the runtime (CUDA context or the Python
  process); and the host memory of two moments the run's peak leaves out: loading (a checkpoint of another precision
  is converted while its file is mapped: the converted weights plus the file) and ``export-model``'s merge (fp32
  weights plus the mapped file);
- time per epoch on the benchmark's train split (scoring: per query and for the test split) on A100-80G and H100 at
  a stated utilisation of the bf16 dense peak.

The numbers are a model, checked against measurements: ``benchmarks/real_shapes.py`` prints the plan beside the
peak RSS of every CPU row (BENCHMARKS.md), and the paper's anchor (13 h per epoch on 2 x A100 for Qwen2-VL-7B on
University-1652, SkyLink arXiv 2603.08063) is what :data:`DEFAULT_UTILISATION` reproduces.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GIB = 2**30
#: bf16 dense peak FLOP/s per GPU (A100 SXM 80 GB: 312 TFLOP/s; H100 SXM: 989 TFLOP/s).
GPU_PEAK_FLOPS: dict[str, float] = {"A100-80G": 312e12, "H100": 989e12}
#: Fraction of the peak a training/scoring step sustains. 0.40 gives 12.9 h per epoch for the paper's setting
#: (Qwen2-VL-7B, University-1652 D2S, k = 13, naive pairs, checkpointing, 2 x A100) against its 13 h.
DEFAULT_UTILISATION = 0.40
#: Train/test queries of the benchmarks whose sizes are fixed (one training group per train query).
KNOWN_SPLITS: dict[tuple[str, str], dict[str, int]] = {
    ("university1652", "d2s"): {"train": 37854, "test": 37855, "gallery": 951},
    ("university1652", "s2d"): {"train": 701, "test": 701, "gallery": 51355},
}
#: Text tokens of one pair's prompt (template, system prompt, SkyLink's prompt, vision delimiters, generation
#: prompt), and how many of them follow the candidate image, counted with the offline processors.
TEXT_TOKENS = {"qwen": (38, 7), "llava_onevision": (22, 6)}
#: Resident memory besides the tensors: the CUDA context on a GPU; on the CPU the Python process with torch,
#: transformers and a 151k-token processor loaded (measured by ``benchmarks/real_shapes.py`` as its baseline).
RUNTIME_GIB = {"cuda": 0.6, "cpu": 1.0}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Bytes per weight of a published checkpoint whose config does not say (the Qwen-VL and LLaVA-OneVision releases
#: are bf16 / fp16).
CHECKPOINT_BYTES_DEFAULT = 2


def checkpoint_bytes(config: Any) -> int:
    """Bytes per weight of the checkpoint ``config`` describes (its ``dtype``/``torch_dtype``), else 16-bit."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = str(dtype).removeprefix("torch.") if dtype is not None else ""
    return _BYTES.get(name, CHECKPOINT_BYTES_DEFAULT)


@dataclass(frozen=True)
class PlanInputs:
    """What a plan depends on (the CLI's options; defaults: the paper's run on one device)."""

    model: str = "Qwen/Qwen2-VL-7B-Instruct"
    mode: str = "train"  # "train" or "eval"
    k: int = 13
    batch_size: int = 4  # groups per optimizer step, in total
    num_gpus: int = 1
    zero_stage: int = 0  # 0 (DDP: everything replicated) or 2 (gradients and optimizer state sharded)
    dtype: str = "bfloat16"
    device: str = "cuda"  # "cuda" or "cpu" (the runtime overhead)
    image_size: int = 384
    min_pixels: int | None = None
    max_pixels: int | None = None
    gradient_checkpointing: bool = True
    shared_prefix: bool = True
    micro_batch_size: int | None = None  # pairs per forward (None: the whole group)
    lora_r: int = 16
    lora_targets: tuple[str, ...] | None = None
    lora_vision: bool = True
    train_queries: int | None = None
    test_queries: int | None = None
    gallery_images: int | None = None  # scoring: distinct gallery images (the vision-feature cache's working set)
    feature_cache_mb: float = 1024.0
    utilisation: float = DEFAULT_UTILISATION
    offline: bool = False


@dataclass
class TrainPlan:
    """The plan of one run (see the module docstring); ``format()`` is what ``--plan`` prints."""

    inputs: PlanInputs
    config_source: str
    family: str
    params: dict[str, int]
    tokens: dict[str, float]
    flops: dict[str, float]
    memory_gib: dict[str, float]
    time: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        i, p, t, f, m = self.inputs, self.params, self.tokens, self.flops, self.memory_gib
        train = i.mode == "train"
        path = "fast (shared prefix)" if self.tokens["fast_path"] and i.shared_prefix else "naive (every pair)"
        lines = [
            f"SkyLink {'training' if train else 'scoring'} plan for {i.model} ({self.family}; config: "
            f"{self.config_source})",
            f"  k = {i.k}" + (f", {i.batch_size} groups per optimizer step over {i.num_gpus} GPU(s), ZeRO stage "
                              f"{i.zero_stage}" if train else "") + f", {i.dtype}, path: {path}",
            f"  parameters: {p['total'] / 1e9:.3f} B total, {p['trainable'] / 1e6:.2f} M trainable (LoRA r = "
            f"{i.lora_r} + value head), {p['frozen'] / 1e9:.3f} B frozen",
            f"  tokens: {t['image_tokens_per_image']:.0f} per image at {i.image_size} px, {t['pair_tokens']:.0f} per "
            f"pair; per group {t['group_tokens_naive']:.0f} naive, {t['group_tokens_fast']:.0f} on the fast path "
            f"(prefix {t['prefix_tokens']:.0f} + {i.k} x {t['continuation_tokens']:.0f})",
            f"  FLOPs per group ({'forward + backward' if train else 'forward'}): {f['group_naive'] / 1e12:.1f} T "
            f"naive, {f['group_fast'] / 1e12:.1f} T fast (ratio {f['group_naive'] / f['group_fast']:.2f}); "
            f"used: {f['group'] / 1e12:.1f} T",
            f"  memory per device (GiB): weights {m['weights']:.2f}",
        ]
        if train:
            lines[-1] += (f", LoRA state {m['lora_state']:.2f}, activations {m['activations']:.2f} "
                          f"(with checkpointing {m['activations_checkpointed']:.2f}, without "
                          f"{m['activations_full']:.2f})")  # fmt: skip
        else:
            lines[-1] += f", activations {m['activations']:.2f}, vision cache {m['vision_cache']:.2f}"
        lines[-1] += f", runtime {m['runtime']:.2f}; total {m['total']:.2f}"
        converted = m["load_conversion"] > 0
        how = "converted weights plus the mapped checkpoint file" if converted else "the mapped file is the weights"
        lines.append(f"  host memory loading on the CPU (GiB): {m['load']:.2f} ({how}, {m['checkpoint_file']:.2f}); "
                     f"export-model's fp32 merge {m['export_merge']:.2f}")  # fmt: skip
        unit = "epoch (train split)" if train else "test split"
        queries = self.time.get("queries")
        lines.append(f"  time per {unit}, {queries if queries else '?'} queries, at {i.utilisation:.0%} of the bf16 "
                     f"peak on {i.num_gpus if train else 1} GPU(s):")  # fmt: skip
        for gpu, hours in self.time["hours"].items():
            per = self.time["seconds_per_group"][gpu]
            lines.append(f"    {gpu}: {per:.2f} s per {'group' if train else 'query'}"
                         + (f", {hours:.1f} h" if hours is not None else ""))  # fmt: skip
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def summary(self, steps: int | None = None, mixed_precision: str | None = None) -> str:
        """One line: groups per step, steps (``steps``: the run's own count), precision and memory per device."""
        i, m = self.inputs, self.memory_gib
        steps = steps if steps is not None else self.time.get("optimizer_steps")
        precision = f"weights in {i.dtype}" + (f", mixed precision {mixed_precision}" if mixed_precision else "")
        parts = [
            f"{i.batch_size} groups per optimizer step",
            f"{steps if steps is not None else '?'} steps",
            precision,
        ]
        memory = (
            f"about {m['total']:.2f} GiB per device (weights {m['weights']:.2f}, LoRA state {m['lora_state']:.2f}, "
            f"activations {m['activations']:.2f}, runtime {m['runtime']:.2f})"
        )
        return f"plan: {', '.join(parts)}; memory {memory}"


# ---------------------------------------------------------------------------------------------- config
def load_config(model: str, *, offline: bool = False) -> tuple[Any, str]:
    """The base model's config: a local folder, the Hub (online), or the built-in published config."""
    from transformers import AutoConfig

    from skylink_model.published_configs import PUBLISHED_CONFIGS, published_config

    if Path(model).expanduser().is_dir():
        return AutoConfig.from_pretrained(Path(model).expanduser()), f"local folder {model}"
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline:
        try:
            return AutoConfig.from_pretrained(model), "Hub"
        except (OSError, ValueError) as err:
            if model not in PUBLISHED_CONFIGS:
                from skyrank.errors import SkyRankError

                raise SkyRankError(
                    f"cannot read the config of {model!r}: {err}",
                    hint="pass a local model folder, or one of the built-in ids offline: "
                    + ", ".join(sorted(PUBLISHED_CONFIGS)),
                ) from None
    return published_config(model), "built-in published config"


def _meta_model(config: Any) -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    model_cls = AutoModelForImageTextToText._model_mapping[type(config)]
    with torch.device("meta"):
        return model_cls._from_config(config)


# ---------------------------------------------------------------------------------------------- FLOP model
def _vision_block_matmul(vc: Any) -> tuple[int, float]:
    """(width, matmul FLOPs per patch per block) of a vision tower: attention 4e^2, MLP 2 or 3 matrices."""
    if hasattr(vc, "embed_dim"):  # Qwen2-VL: fc1/fc2 of ratio mlp_ratio
        e = vc.embed_dim
        return e, 2 * (4 * e * e + 2 * vc.mlp_ratio * e * e)
    e, inter = vc.hidden_size, vc.intermediate_size
    mlp_mats = 3 if getattr(vc, "model_type", "") == "qwen2_5_vl" else 2  # Qwen2.5-VL: SwiGLU
    return e, 2 * (4 * e * e + mlp_mats * e * inter)


def vision_flops(vc: Any, n_patches: int, text_hidden: int | None = None) -> float:
    """Vision tower FLOPs for one image of ``n_patches`` patches: patch embedding, blocks, merger/projector.

    Qwen2-VL / Qwen2.5-VL / Qwen3-VL: blocks with full attention (Qwen2.5-VL's windowed blocks attend within 64
    patches), the patch merger (and Qwen3-VL's DeepStack mergers) on the merged tokens. SigLIP (LLaVA-OneVision):
    full attention, then the 2-layer projector to ``text_hidden``.
    """
    e, per_patch = _vision_block_matmul(vc)
    if getattr(vc, "model_type", "") == "siglip_vision_model":
        embed = 2 * 3 * vc.patch_size**2 * e * n_patches
        blocks = vc.num_hidden_layers * (per_patch * n_patches + 4 * n_patches * n_patches * e)
        h = text_hidden or e
        return embed + blocks + 2 * n_patches * (e * h + h * h)
    patch_in = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    merge = vc.spatial_merge_size**2
    depth = vc.depth
    full = set(getattr(vc, "fullatt_block_indexes", None) or range(depth))
    window = (vc.window_size // vc.patch_size) ** 2 if hasattr(vc, "window_size") else n_patches
    attention = sum(4 * n_patches * (n_patches if b in full else min(window, n_patches)) * e for b in range(depth))
    out = getattr(vc, "out_hidden_size", None) or vc.hidden_size
    mergers = 1 + len(getattr(vc, "deepstack_visual_indexes", None) or [])
    merger = mergers * (n_patches // merge) * 2 * (merge * e * merge * e + merge * e * out)
    return 2 * patch_in * e * n_patches + depth * per_patch * n_patches + attention + merger


def lm_flops(tc: Any, n_new: int, n_past: int = 0) -> float:
    """Language-model FLOPs for ``n_new`` tokens after ``n_past`` cached ones (causal attention; no lm_head)."""
    h = tc.hidden_size
    head_dim = getattr(tc, "head_dim", None) or h // tc.num_attention_heads
    q = tc.num_attention_heads * head_dim
    kv = tc.num_key_value_heads * head_dim
    linear = 2 * (h * q + 2 * h * kv + q * h + 3 * h * tc.intermediate_size)
    attention = 4 * q * (n_new * n_past + n_new * (n_new + 1) / 2)
    return tc.num_hidden_layers * (n_new * linear + attention)


# ---------------------------------------------------------------------------------------------- tokens
def image_grid(config: Any, image_size: int, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    """(vision patches, language tokens) of one square image as the family's processor sizes it."""
    vc = config.vision_config
    if config.model_type == "llava_onevision":
        side = vc.image_size // vc.patch_size
        return side * side, side * side + 1  # multi-image path: base resolution + one newline token
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from skylink_model.backbones import get_backbone_spec

    spec = get_backbone_spec(config.model_type)
    factor = vc.patch_size * vc.spatial_merge_size
    lo = min_pixels if min_pixels is not None else spec.min_pixels or 56 * 56
    hi = max_pixels if max_pixels is not None else spec.max_pixels or 28 * 28 * 1280
    h, w = smart_resize(image_size, image_size, factor=factor, min_pixels=lo, max_pixels=hi)
    patches = (h // vc.patch_size) * (w // vc.patch_size)
    return patches, patches // vc.spatial_merge_size**2


def _lora_params(model: Any, family: str, inputs: PlanInputs) -> int:
    import re

    from torch import nn

    from skylink_model.backbones import get_backbone_spec
    from skylink_model.model import lora_target_pattern

    spec = get_backbone_spec(family)
    targets = list(inputs.lora_targets) if inputs.lora_targets is not None else list(spec.lora_targets)
    pattern = re.compile(lora_target_pattern(spec, targets, vision=inputs.lora_vision))
    linears = [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.match(name)]
    return sum(inputs.lora_r * (m.in_features + m.out_features) for m in linears)


# ---------------------------------------------------------------------------------------------- memory
def _act_bytes_per_token(tc: Any, nbytes: int) -> tuple[float, float]:
    """(kept per layer with checkpointing, kept per layer without) bytes per language token.

    Without checkpointing a decoder layer keeps its norms' outputs, q/k/v/attention output (4 q-widths), the MLP's
    gate, up, activation and product (4 x intermediate) and the residual inputs; with it only its input.
    """
    h = tc.hidden_size
    head_dim = getattr(tc, "head_dim", None) or h // tc.num_attention_heads
    q, kv = tc.num_attention_heads * head_dim, tc.num_key_value_heads * head_dim
    full = (4 * h + 2 * q + 2 * kv + 4 * tc.intermediate_size) * nbytes
    return h * nbytes, full


def _vision_act_bytes_per_patch(vc: Any, nbytes: int) -> tuple[float, float]:
    e, _ = _vision_block_matmul(vc)
    inter = getattr(vc, "intermediate_size", None) or e * getattr(vc, "mlp_ratio", 4)
    return e * nbytes, (8 * e + 3 * inter) * nbytes


def estimate(inputs: PlanInputs, model_config: Any = None) -> TrainPlan:
    """The plan of one run (module docstring). Reads the model's config only (``model_config``: one already loaded,
    else :func:`load_config`); builds nothing but meta tensors."""
    if inputs.mode not in ("train", "eval"):
        raise ValueError(f"`mode` must be train or eval, got {inputs.mode!r}")
    if inputs.zero_stage not in (0, 2):
        raise ValueError(f"`zero_stage` must be 0 or 2 (ZeRO-3 is not supported by SkyLink), got {inputs.zero_stage}")
    if inputs.dtype not in _BYTES:
        raise ValueError(f"`dtype` must be one of {', '.join(_BYTES)}, got {inputs.dtype!r}")
    from skylink_model.backbones import get_backbone_spec

    if model_config is not None:
        config, source = model_config, "the loaded model"
    else:
        config, source = load_config(inputs.model, offline=inputs.offline)
    family = config.model_type
    spec = get_backbone_spec(family)
    tc, vc = config.get_text_config(), config.vision_config
    model = _meta_model(config)
    total = sum(p.numel() for p in model.parameters())
    lora = _lora_params(model, family, inputs)
    trainable = lora + tc.hidden_size
    params = {"total": total + trainable, "trainable": trainable, "frozen": total, "lora": lora}
    del model

    # tokens
    patches, image_tokens = image_grid(config, inputs.image_size, inputs.min_pixels, inputs.max_pixels)
    text, text_after = TEXT_TOKENS["llava_onevision" if family == "llava_onevision" else "qwen"]
    pair = 2 * image_tokens + text
    continuation = image_tokens + text_after
    prefix = pair - continuation
    fast_path = bool(spec.shared_prefix)
    k = inputs.k
    tokens = {"image_patches_per_image": patches, "image_tokens_per_image": image_tokens, "text_tokens_per_pair": text,
              "pair_tokens": pair, "prefix_tokens": prefix, "continuation_tokens": continuation,
              "group_tokens_naive": k * pair, "group_tokens_fast": prefix + k * continuation,
              "fast_path": fast_path}  # fmt: skip
    use_fast = inputs.shared_prefix and fast_path

    # FLOPs
    train = inputs.mode == "train"
    nbytes = _BYTES[inputs.dtype]
    feature_bytes = image_tokens * tc.hidden_size * nbytes  # one image's cached vision features
    gallery_bytes = feature_bytes * (inputs.gallery_images or 0)
    cache_hits = (not train and spec.shared_vision and inputs.gallery_images is not None
                  and 0 < gallery_bytes <= inputs.feature_cache_mb * 2**20)  # fmt: skip
    v_img = vision_flops(vc, patches, tc.hidden_size)
    naive = k * (2 * v_img + lm_flops(tc, pair))
    fast = (1 if cache_hits else k + 1) * v_img + lm_flops(tc, prefix) + k * lm_flops(tc, continuation, prefix)
    factor = (2 + (1 if inputs.gradient_checkpointing else 0)) if train else 1
    flops = {"vision_per_image": v_img, "lm_per_pair": lm_flops(tc, pair), "group_naive": factor * naive,
             "group_fast": factor * fast, "train_factor": factor}  # fmt: skip
    flops["group"] = flops["group_fast"] if use_fast else flops["group_naive"]

    # memory
    weights = params["frozen"] * nbytes / GIB
    layers, depth = tc.num_hidden_layers, getattr(vc, "depth", getattr(vc, "num_hidden_layers", 0))
    kept, full = _act_bytes_per_token(tc, nbytes)
    v_kept, v_full = _vision_act_bytes_per_patch(vc, nbytes)
    micro = min(inputs.micro_batch_size or k, k)
    lm_tokens = (prefix + micro * continuation) if use_fast else micro * pair
    images = (micro + 1) if use_fast else 2 * micro
    one_layer = lm_tokens * full + images * patches * v_full  # the layer being replayed / computed
    act_ckpt = (layers * lm_tokens * kept + depth * images * patches * v_kept + one_layer) / GIB
    act_full = (layers * lm_tokens * full + depth * images * patches * v_full) / GIB
    memory: dict[str, float] = {"weights": weights}
    if train:
        shard = inputs.num_gpus if inputs.zero_stage == 2 else 1
        memory["lora_state"] = trainable * (4 + (4 + 8) / shard) / GIB  # fp32 weights; grads + AdamW moments
        memory["activations_checkpointed"] = act_ckpt
        memory["activations_full"] = act_full
        memory["activations"] = act_ckpt if inputs.gradient_checkpointing else act_full
        memory["vision_cache"] = 0.0
    else:  # inference: the largest transient is one layer of the batch (the vision tower's, then the language
        # model's: they run one after the other), plus the prefix cache on the fast path
        batch_tokens = (prefix + k * continuation) if use_fast else k * pair
        kv_cache = (layers * prefix * 2 * tc.num_key_value_heads * (getattr(tc, "head_dim", None)
                    or tc.hidden_size // tc.num_attention_heads) * nbytes) if use_fast else 0  # fmt: skip
        vision_layer = (k + 1 if use_fast else 2 * k) * patches * v_full
        memory["activations"] = (max(batch_tokens * full, vision_layer) + kv_cache) / GIB
        held = gallery_bytes if inputs.gallery_images else feature_bytes * k
        memory["vision_cache"] = (min(inputs.feature_cache_mb * 2**20, held) if use_fast and spec.shared_vision
                                  else 0.0) / GIB  # fmt: skip
        memory["lora_state"] = trainable * 4 / GIB
    memory["runtime"] = RUNTIME_GIB["cpu" if inputs.device == "cpu" else "cuda"]
    memory["total"] = sum(memory[key] for key in ("weights", "lora_state", "activations", "vision_cache", "runtime"))
    # Host memory while loading: the weights in the run's precision, plus the mapped checkpoint file when its
    # precision differs (the converted copy and the file's pages are both resident until loading ends; measured 21.8
    # GiB for Qwen2.5-VL-3B bf16 → fp32). Same precision: the file's pages are the weights. export-model merges in
    # fp32 on the CPU, from the checkpoint file likewise (measured 22.6 GiB for 3B).
    file_nbytes = checkpoint_bytes(config)
    file_bytes = params["frozen"] * file_nbytes
    memory["checkpoint_file"] = file_bytes / GIB
    memory["load_conversion"] = file_bytes / GIB if file_nbytes != nbytes else 0.0  # the file beside the copy
    memory["load"] = weights + memory["load_conversion"] + RUNTIME_GIB["cpu"]  # loading on the CPU (host RAM)
    memory["export_merge"] = (params["total"] * 4 + file_bytes) / GIB + RUNTIME_GIB["cpu"]

    # time
    split = "train" if train else "test"
    queries = inputs.train_queries if train else inputs.test_queries
    seconds: dict[str, float] = {}
    hours: dict[str, float | None] = {}
    gpus = inputs.num_gpus if train else 1
    for gpu, peak in GPU_PEAK_FLOPS.items():
        seconds[gpu] = flops["group"] / (gpus * peak * inputs.utilisation)
        hours[gpu] = queries * seconds[gpu] / 3600 if queries else None
    time = {"split": split, "queries": queries, "seconds_per_group": seconds, "hours": hours,
            "utilisation": inputs.utilisation}  # fmt: skip
    notes = []
    if cache_hits:
        notes.append(f"the gallery's vision features ({gallery_bytes / 2**20:.0f} MB) stay in the feature cache: one "
                     "vision pass per query")  # fmt: skip
    if inputs.shared_prefix and not fast_path:
        notes.append(f"{family} has no fast path: every pair is scored in full")
    if not queries:
        notes.append(f"the {split} split's size is unknown: pass a local SkyRank folder as --data")
    if train and inputs.batch_size % max(inputs.num_gpus, 1):
        notes.append(f"--batch-size {inputs.batch_size} does not divide by {inputs.num_gpus} GPUs")
    if inputs.device == "cpu" and sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        notes.append("CPU memory assumes freed activations go back to the system: skyrank train/eval/rerank/sweep/"
                     "bench fix glibc's mmap threshold for this on the CPU; in your own process call "
                     "skylink_model.cpu_allocator.fix_mmap_threshold() or set MALLOC_MMAP_THRESHOLD_=1048576 "
                     "(without it LLaVA-OneVision-0.5B's fp32 training step peaked at 18.7 GiB, not 6.2)")  # fmt: skip
    if train:
        steps = math.ceil(queries / inputs.batch_size) if queries else None
        time["optimizer_steps"] = steps
    return TrainPlan(inputs, source, family, params, tokens, flops, {k_: round(v, 4) for k_, v in memory.items()},
                     time, notes)  # fmt: skip


def split_queries(data: str, config: str, split: str) -> int | None:
    """Queries of one split (``"gallery"``: the test gallery's images): a local SkyRank folder's manifest, else the
    known size of the config's benchmark (:data:`KNOWN_SPLITS`), else ``None``."""
    from skylink_model.data import parse_retriever_config

    folder = Path(data).expanduser()
    if folder.is_dir():
        from skyrank.format.manifest import read_manifest

        table = read_manifest(folder).table(config, "test" if split == "gallery" else split)
        key = "gallery" if split == "gallery" else "rows"
        if table and table.get(key) is not None:
            return int(table[key])
    parsed = parse_retriever_config(config)
    known = KNOWN_SPLITS.get((str(parsed.benchmark), str(parsed.direction)))
    return known.get(split) if known else None


def plan_run(mode: str, model: str, data: str, data_config: str, **options: Any) -> TrainPlan:
    """``skyrank train --plan`` / ``skyrank eval --plan``: the plan of that command's run, before any work.

    ``options`` are :class:`PlanInputs` fields (``None`` values keep the defaults); the split's size comes from
    :func:`split_queries` unless ``train_queries`` / ``test_queries`` is given. ``train_fraction`` scales it.
    """
    fraction = options.pop("train_fraction", None)
    kwargs = {key: value for key, value in options.items() if value is not None}
    if "lora_targets" in kwargs and isinstance(kwargs["lora_targets"], str):
        kwargs["lora_targets"] = tuple(t.strip() for t in kwargs["lora_targets"].split(",") if t.strip())
    split = "train" if mode == "train" else "test"
    key = f"{split}_queries"
    if key not in kwargs:
        kwargs[key] = split_queries(data, data_config, split)
    if mode == "eval" and "gallery_images" not in kwargs:
        kwargs["gallery_images"] = split_queries(data, data_config, "gallery")
    if fraction is not None and kwargs.get(key):
        kwargs[key] = max(1, round(kwargs[key] * fraction))
    return estimate(PlanInputs(mode=mode, model=model, **kwargs))


def eval_base_model(adapter: str | None, default: str = PlanInputs.model) -> tuple[str, int | None, int | None]:
    """The base model, min_pixels and max_pixels an ``eval --adapter`` run would use (a local run folder's
    ``skylink_config.json``), else ``default`` and the family's budget."""
    if adapter is not None and (Path(adapter) / "skylink_config.json").is_file():
        from skylink_model.config import SkyLinkConfig

        config = SkyLinkConfig.from_pretrained(adapter)
        return config.base_model, config.min_pixels, config.max_pixels
    return default, None, None


def train_summary(model_config: Any, inputs: PlanInputs, steps: int, mixed_precision: str | None = None) -> str | None:
    """:meth:`TrainPlan.summary` of a run whose model config is already loaded (``skyrank train`` prints it before
    the first step); ``None`` for a config the plan cannot read (an unknown family, a missing field)."""
    from skyrank.errors import SkyRankError

    try:
        return estimate(inputs, model_config).summary(steps, mixed_precision)
    except (SkyRankError, KeyError, AttributeError, ValueError, TypeError):
        return None
