"""Scoring time per query for k = 1…10 candidates: naive pairs vs shared query vision features vs listwise prompt.

SkyLink (arXiv 2603.08063) scores one prompt per (query, candidate) pair, query image first. This script times,
side by side in one run and on the same images, for each k:

- ``naive``: every pair is processed and run through the whole model (2k vision encodings).
- ``shared``: the query image is processed and encoded once, its vision features reused for all k pairs
  (``mm_encoder_outputs``; :func:`skylink_model.rerank.rerank_query`).
- ``shared+cache``: as ``shared`` with the candidates' processed pixels cached across queries (gallery images
  repeat across queries at inference).
- ``listwise-prefill`` / ``listwise-gen``: the appendix-A.8 baseline (one prompt holding the query and all k
  candidates, :func:`skylink_model.prompt_baseline.build_listwise_inputs`): one forward over the prompt, and greedy
  generation of a fixed 6·k new tokens (≈ one ``Candidate i: s`` line per candidate), so random weights cannot
  stop early.

Ratios are against ``shared``. Usage::

    python benchmarks/rerank.py                      # tiny Qwen2-VL on CPU, 112 px images
    python benchmarks/rerank.py --size 2b --device cuda --image-size 448   # random weights at Qwen2-VL-2B size
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from skylink_model.backbones import apply_image_budget, get_backbone_spec, resolve_dtype
from skylink_model.config import SkyLinkConfig
from skylink_model.model import SkyLinkModel, get_skylink_model, lora_target_pattern
from skylink_model.rerank import PixelCache, rerank_query
from skylink_model.testing import make_tiny_qwen2_vl

# Published Qwen2-VL sizes (config.json of Qwen/Qwen2-VL-{2B,7B}-Instruct), random weights.
SIZES: dict[str, dict[str, Any]] = {
    "2b": {
        "text": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                 "num_key_value_heads": 2, "vocab_size": 151936},
        "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_size": 1536},
        "tie_word_embeddings": True,
    },
    "7b": {
        "text": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                 "num_key_value_heads": 4, "vocab_size": 152064},
        "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_size": 3584},
        "tie_word_embeddings": False,
    },
}


def _images(n: int, size: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def build_model(size: str, tiny_dir: Path, device: str, dtype: str) -> SkyLinkModel:
    """The tiny model from its folder, or a random model at a real size sharing the tiny processor."""
    if size == "tiny":
        return get_skylink_model(SkyLinkConfig(base_model=str(tiny_dir), dtype=dtype), device=device).eval()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoProcessor, Qwen2VLForConditionalGeneration

    tiny = AutoConfig.from_pretrained(tiny_dir)
    text = dict(
        SIZES[size]["text"],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        tie_word_embeddings=SIZES[size]["tie_word_embeddings"],
        bos_token_id=None,
        eos_token_id=tiny.text_config.eos_token_id,
        pad_token_id=tiny.text_config.pad_token_id,
    )
    vision = dict(SIZES[size]["vision"])
    hf_config = type(tiny)(
        text_config=text,
        vision_config=vision,
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=SIZES[size]["tie_word_embeddings"],
    )
    torch_dtype = resolve_dtype(dtype, device)
    with torch.device(device):
        backbone = Qwen2VLForConditionalGeneration._from_config(hf_config, dtype=torch_dtype).eval()
    spec = get_backbone_spec("qwen2_vl")
    processor = AutoProcessor.from_pretrained(tiny_dir)
    processor.tokenizer.padding_side = "left"
    apply_image_budget(processor, spec.min_pixels, spec.max_pixels)
    config = SkyLinkConfig(base_model=f"random-qwen2-vl-{size}", dtype=dtype, head_init="random")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                      target_modules=lora_target_pattern(spec, spec.lora_targets, vision=True))
    model = SkyLinkModel(get_peft_model(backbone, lora), processor, config, spec)
    model.init_value_head("random")
    return model.eval()


def _time_round_robin(fns: dict[str, Any], device: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds per function, the functions interleaved so machine load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", *SIZES], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--image-size", type=int, default=None, help="square image side (tiny: 112, else 448)")
    parser.add_argument("--max-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-listwise", action="store_true", help="skip the listwise prompt baseline")
    args = parser.parse_args(argv)
    image_size = args.image_size or (112 if args.size == "tiny" else 448)

    try:
        from skylink_model.prompt_baseline import build_listwise_inputs
    except ImportError:  # the baseline module is optional for this script
        build_listwise_inputs = None

    with tempfile.TemporaryDirectory() as tmp:
        tiny_dir = make_tiny_qwen2_vl(Path(tmp) / "tiny")
        model = build_model(args.size, tiny_dir, args.device, args.dtype)
    base = model.backbone.get_base_model()
    query, *gallery = _images(args.max_k + 1, image_size, seed=0)
    keys = [f"g{i}" for i in range(len(gallery))]
    print(
        f"# SkyLink scoring time per query — size={args.size}, device={args.device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if args.device.startswith('cuda') else ''}, "
        f"dtype={next(base.parameters()).dtype}, images {image_size}px, best of {args.repeats}, interleaved"
    )
    cols = ["naive", "shared", "shared+cache"]
    if build_listwise_inputs is not None and not args.no_listwise:
        cols += ["listwise-prefill", "listwise-gen"]
    print("| k | " + " | ".join(f"{c} ms" for c in cols) + " | naive/shared | " +
          " | ".join(f"{c}/shared" for c in cols[2:]) + " |")
    print("|---" * (2 * len(cols)) + "|")
    with torch.inference_mode():
        rerank_query(model, query, gallery[:2], shared_vision=True)  # warm-up
        rerank_query(model, query, gallery[:2], shared_vision=False)
        for k in range(1, args.max_k + 1):
            cands = gallery[:k]
            cache = PixelCache()
            cache.get_or_process(model, keys[:k], cands)
            fns = {
                "naive": lambda c=cands, b=k: rerank_query(model, query, c, batch_size=b, shared_vision=False),
                "shared": lambda c=cands, b=k: rerank_query(model, query, c, batch_size=b, shared_vision=True),
                "shared+cache": lambda c=cands, b=k, ca=cache: rerank_query(
                    model, query, c, batch_size=b, shared_vision=True, candidate_keys=keys[:b], cache=ca
                ),
            }
            if "listwise-prefill" in cols:
                def prefill(c=cands):
                    inputs = build_listwise_inputs(model.processor, query, c).to(model.device)
                    base.model(**inputs, use_cache=False)

                def generate(c=cands, n=6 * k):
                    inputs = build_listwise_inputs(model.processor, query, c).to(model.device)
                    base.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                  pad_token_id=model.processor.tokenizer.pad_token_id)

                fns["listwise-prefill"] = prefill
                fns["listwise-gen"] = generate
            ms = {name: 1000 * s for name, s in _time_round_robin(fns, args.device, args.repeats).items()}
            ratios = [ms["naive"] / ms["shared"]] + [ms[c] / ms["shared"] for c in cols[2:]]
            print(f"| {k} | " + " | ".join(f"{ms[c]:.1f}" for c in cols) + " | " +
                  " | ".join(f"{r:.2f}" for r in ratios) + " |")


if __name__ == "__main__":
    main()
