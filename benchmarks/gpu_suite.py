"""One prepared GPU check of the paper's hardware path (SkyLink arXiv 2603.08063; issue 10), one table out.

Rows (each timed best-of-N after a warm-up, peak GPU memory per row):

- ``retriever``: images/s of a random-weight ``convnext_base`` (timm, Sample4Geo's backbone) at 384 px, bf16 autocast,
  channels_last, batch 64.
- ``search``: exact top-100 inner-product search of 1,000 queries in a 1M x 1024-d fp16 gallery on the GPU:
  faiss-gpu ``IndexFlatIP`` when importable, else ``torch.matmul`` + ``torch.topk`` in gallery chunks.
- ``rerank-<family>``: every backbone family at its smallest published size (Qwen2-VL-2B, Qwen2.5-VL-3B,
  Qwen3-VL-2B, LLaVA-OneVision-0.5B) and Qwen2-VL-7B, random weights from the built-in published configs
  (:func:`skylink_model.published_configs.make_random_model`: a folder shaped like the Hub checkpoint, no download)
  loaded as ``skyrank train`` loads it (LoRA r16 on the backbone table's targets in both towers), bf16, 384 px
  images: ms/query at k = 10 through ``rerank_query`` on the fast path (shared prefix + warm feature caches) with
  its max |delta score| against the naive per-pair path, and on the naive path.
- ``train-<family>``: groups/s of one training group of k = 13 (forward, the relational soft-label loss Eq. 8,
  backward, AdamW step) with LoRA + non-reentrant gradient checkpointing, bf16 autocast, on the shared prefix (what
  ``train_skylink`` runs) and on naive pairs. Every row carries its peak GPU memory.
- ``deepspeed``: one ZeRO-2 bf16 optimizer step of the 2B model in a 1-process DeepSpeed engine (the engine casts the
  whole module to bf16; the value head still computes in fp32) when ``deepspeed`` is importable.

Runs offline on a stock CUDA PyTorch stack (torch, transformers, peft, timm): the project's code is imported from
this checkout (no install needed), ``datasets`` is never imported, and optional parts that are missing (faiss-gpu,
DeepSpeed, timm) are listed as skipped. ``--dry-run`` runs every row at tiny sizes on the CPU (each family's
tiny model, ``convnext_atto`` at 64 px, a 20k x 64 gallery) to check the script itself. Usage::

    python benchmarks/gpu_suite.py                 # sized for <= 6 minutes on one H100 (not yet run on one)
    python benchmarks/gpu_suite.py --dry-run       # CPU: 134 s on 2 shared cores
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the checkout's code, importable without installing it

import torch  # noqa: E402

ROWS: list[dict[str, Any]] = []
SKIPPED: list[str] = []


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_of(fn: Callable[[], Any], device: str, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _row(name: str, metric: str, value: float | None, unit: str, device: str, note: str = "") -> None:
    ROWS.append({"row": name, "metric": metric, "value": value, "unit": unit, "peak_gib": _peak_gib(device),
                 "note": note})  # fmt: skip
    print(f"  {name}: {metric} = {value if value is None else round(value, 3)} {unit} {note}", flush=True)


def _guard(name: str, device: str, fn: Callable[[], None]) -> None:
    """Run one section; a failure becomes a table row (the other rows still run)."""
    started = time.perf_counter()
    try:
        _reset_peak(device)
        fn()
    except Exception as err:  # noqa: BLE001 - the suite reports every failure in its table
        traceback.print_exc()
        ROWS.append({"row": name, "metric": "FAILED", "value": None, "unit": "", "peak_gib": None,
                     "note": f"{type(err).__name__}: {str(err)[:120]}"})  # fmt: skip
    gc.collect()  # the section's models are gone: give their GPU memory back before the next one
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    print(f"# {name} took {time.perf_counter() - started:.0f}s", flush=True)


# ---------------------------------------------------------------------------------------------- sections
def retriever(device: str, dry: bool) -> None:
    if importlib.util.find_spec("timm") is None:
        SKIPPED.append("retriever row (timm not installed)")
        return
    import timm

    arch, size, batch = ("convnext_atto", 64, 4) if dry else ("convnext_base", 384, 64)
    model = timm.create_model(arch, pretrained=False, num_classes=0).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=not dry)

    def run() -> None:
        with torch.inference_mode(), autocast:
            model(x)

    seconds = _best_of(run, device, repeats=3 if dry else 10, warmup=1 if dry else 3)
    precision = "fp32" if dry else "bf16"
    _row("retriever", f"{arch} {size}px {precision} channels_last, batch {batch}", batch / seconds, "images/s", device)


def search(device: str, dry: bool) -> None:
    n, dim, nq, k, chunk = (20_000, 64, 16, 100, 8_192) if dry else (1_000_000, 1024, 1_000, 100, 262_144)
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.float32 if dry else torch.float16
    gallery = torch.nn.functional.normalize(torch.randn(n, dim, device=device, generator=gen), dim=1).to(dtype)
    queries = torch.nn.functional.normalize(torch.randn(nq, dim, device=device, generator=gen), dim=1).to(dtype)

    def torch_search() -> tuple[torch.Tensor, torch.Tensor]:
        best_s = torch.full((nq, k), -float("inf"), device=device)
        best_i = torch.zeros((nq, k), dtype=torch.long, device=device)
        for lo in range(0, n, chunk):
            s = (queries @ gallery[lo : lo + chunk].T).float()
            top_s, top_i = torch.topk(s, min(k, s.shape[1]), dim=1)
            merged_s = torch.cat([best_s, top_s], dim=1)
            merged_i = torch.cat([best_i, top_i + lo], dim=1)
            best_s, pos = torch.topk(merged_s, k, dim=1)
            best_i = torch.gather(merged_i, 1, pos)
        return best_s, best_i

    seconds = _best_of(torch_search, device, repeats=3 if dry else 5)
    _row("search", f"torch exact top-{k}, {n:,} x {dim}-d {str(dtype)[6:]}, {nq} queries", nq / seconds,
         "queries/s", device, f"{seconds * 1e3:.1f} ms per batch")  # fmt: skip
    faiss_gpu = False
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and device.startswith("cuda")
    if not faiss_gpu:
        SKIPPED.append("faiss-gpu search row (faiss-gpu not installed or no GPU): torch matmul + topk used")
        return
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(res, dim)
    index.add(gallery.float().cpu().numpy())
    q = queries.float().cpu().numpy()
    seconds = _best_of(lambda: index.search(q, k), device, repeats=5)
    _row("search", f"faiss-gpu IndexFlatIP top-{k}, {n:,} x {dim}-d, {nq} queries", nq / seconds, "queries/s", device)


#: section -> (published model id, scoring only); ``--dry-run`` uses the family's tiny model instead.
MODEL_SECTIONS: dict[str, tuple[str, bool]] = {
    "qwen2_vl": ("Qwen/Qwen2-VL-2B-Instruct", False),
    "qwen2_5_vl": ("Qwen/Qwen2.5-VL-3B-Instruct", False),
    "qwen3_vl": ("Qwen/Qwen3-VL-2B-Instruct", False),
    "llava_onevision": ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", False),
    "qwen2_vl_7b": ("Qwen/Qwen2-VL-7B-Instruct", False),
}
ALIASES = {"2b": "qwen2_vl", "7b": "qwen2_vl_7b"}  # the section names before issue 19


def _model_dir(section: str, dry: bool, work: Path) -> Path:
    """A folder shaped like the Hub checkpoint: the published config with random weights, or the tiny model."""
    from skylink_model.published_configs import make_random_model
    from skylink_model.testing import make_tiny_model

    family = section.removesuffix("_7b")
    folder = work / (f"tiny-{family}" if dry else section)
    if (folder / "config.json").is_file():
        return folder
    if dry:
        return make_tiny_model(work / f"tiny-{family}", family)
    return make_random_model(MODEL_SECTIONS[section][0], work / section)


def _load(folder: Path, device: str, dry: bool) -> Any:
    """The model as ``skyrank train`` builds it (backbone table's LoRA targets, value head, image budget)."""
    from skylink_model.config import SkyLinkConfig
    from skylink_model.model import get_skylink_model

    config = SkyLinkConfig(base_model=str(folder), dtype="float32" if dry else "bfloat16", head_init="random",
                           lora_dropout=0.0)  # fmt: skip
    model = get_skylink_model(config, device=device)
    with torch.no_grad():  # non-zero adapters, as after training
        for name, p in model.lora_parameters().items():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.eval()


def rerank_and_train(section: str, device: str, dry: bool, work: Path, image_size: int, repeats: int) -> None:
    import numpy as np
    from PIL import Image

    from skylink_model.losses import RelationalSoftLabelLoss
    from skylink_model.rerank import FeatureCache, PixelCache, rerank_query

    name = section.replace("_", "-") + (" (tiny, dry run)" if dry else "")
    dtype = "fp32" if dry else "bf16"
    model = _load(_model_dir(section, dry, work), device, dry)
    path = "fast (shared prefix, warm caches)" if model.supports_shared_prefix else "fallback to naive"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(14)]
    query, gallery = images[0], images[1:]
    keys = [f"g{i}" for i in range(len(gallery))]
    pixels, features = PixelCache(), FeatureCache()
    cands = gallery[:10]

    def fast() -> Any:
        return rerank_query(model, query, cands, candidate_keys=keys[:10], cache=pixels, feature_cache=features)

    def naive() -> Any:
        return rerank_query(model, query, cands, shared_prefix=False, shared_vision=False)

    diff = float((fast() - naive()).abs().max())  # also the warm-up of both paths
    warmup = 0 if dry else 1
    _reset_peak(device)
    seconds = _best_of(fast, device, repeats, warmup)
    _row(f"rerank-{name}", f"k=10 {path}, {dtype}", seconds * 1e3, "ms/query", device, f"max |dS| {diff:.1e}")
    _reset_peak(device)
    seconds = _best_of(naive, device, repeats, warmup)
    _row(f"rerank-{name}", f"k=10 naive (every pair in full), {dtype}", seconds * 1e3, "ms/query", device)
    if MODEL_SECTIONS[section][1]:
        return

    model.train()
    model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    labels = torch.tensor([[1.0] + [0.0] * 12], device=model.device)
    loss_fn = RelationalSoftLabelLoss()
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=not dry)

    def step(fast_path: bool) -> None:
        with autocast:
            if fast_path:  # what train_skylink runs: the whole group on one prefix
                inputs = model.group_inputs(model.process_images([query])[0], model.process_images(gallery[:13]))
            else:
                inputs = model.build_pair_inputs([query] * 13, gallery[:13])
            scores = model(**inputs)
        loss_fn(scores.float().unsqueeze(0), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for fast_path in (True, False) if model.supports_shared_prefix else (False,):
        _reset_peak(device)
        seconds = _best_of(lambda f=fast_path: step(f), device, repeats, warmup)
        what = "shared prefix" if fast_path else "naive pairs"
        _row(f"train-{name}", f"k=13 {what}, LoRA + gradient checkpointing, AdamW step", 1.0 / seconds, "groups/s",
             device)  # fmt: skip


def deepspeed_step(device: str, dry: bool, work: Path, image_size: int) -> None:
    if importlib.util.find_spec("deepspeed") is None:
        SKIPPED.append("DeepSpeed ZeRO-2 row (deepspeed not installed)")
        return
    import deepspeed
    import deepspeed.comm.torch  # noqa: F401 - patched below in a dry run
    import numpy as np
    from PIL import Image

    from skylink_model.losses import RelationalSoftLabelLoss

    if dry:  # DeepSpeed's CPU accelerator would JIT-compile its shared-memory allreduce op (minutes); gloo is enough
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    model = _load(_model_dir("qwen2_vl", dry, work), device, dry)
    model.train()
    if not dry:
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2, "overlap_comm": False, "contiguous_gradients": True},
        "zero_allow_untested_optimizer": True,
    }
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(params, lr=1e-4), config=config)
    unwrapped = engine.module
    assert next(unwrapped.backbone.parameters()).dtype == torch.bfloat16  # DeepSpeed's whole-module cast
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(14)]
    inputs = unwrapped.build_pair_inputs([images[0]] * 13, images[1:])
    labels = torch.tensor([[1.0] + [0.0] * 12], device=engine.device)
    loss_fn = RelationalSoftLabelLoss()

    def step() -> None:
        scores = engine(**inputs)
        assert scores.dtype == torch.float32
        engine.backward(loss_fn(scores.unsqueeze(0), labels))
        engine.step()

    seconds = _best_of(step, device, repeats=2)
    _row("deepspeed", f"ZeRO-2 bf16 step, {'tiny' if dry else '2b'}, k=13 (naive pairs)", 1.0 / seconds, "groups/s",
         device)  # fmt: skip


# ---------------------------------------------------------------------------------------------- main
def format_table(device_name: str) -> str:
    lines = [
        f"| row | what | value | unit | peak GPU GiB | note |  ({device_name})",
        "|---|---|---:|---|---:|---|",
    ]
    for r in ROWS:
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        lines.append(f"| {r['row']} | {r['metric']} | {value} | {r['unit']} | {peak} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="example: python benchmarks/gpu_suite.py --json gpu_suite.json"
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (checks the script itself)")
    parser.add_argument("--only", default="retriever,search," + ",".join(MODEL_SECTIONS) + ",deepspeed",
                        help="comma-separated sections (model sections: " + ", ".join(MODEL_SECTIONS) + ")")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row, best kept (default 3; 2 dry)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows there (atomically)")
    args = parser.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on a CPU machine")
    device = "cpu" if dry else "cuda"
    device_name = "CPU dry run" if dry else torch.cuda.get_device_name(0)
    sections = {ALIASES.get(name, name) for name in args.only.split(",")}
    image_size = 56 if dry else 384
    repeats = args.repeats or (2 if dry else 3)
    started = time.perf_counter()
    print(f"# gpu_suite on {device_name}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "retriever" in sections:
            _guard("retriever", device, lambda: retriever(device, dry))
        if "search" in sections:
            _guard("search", device, lambda: search(device, dry))
        for section in MODEL_SECTIONS:
            if section in sections:
                run = lambda s=section: rerank_and_train(s, device, dry, work, image_size, repeats)  # noqa: E731
                _guard(section, device, run)
                if section != "qwen2_vl":  # the deepspeed row reuses the 2B folder
                    shutil.rmtree(work / section, ignore_errors=True)  # its random weights (up to 16 GB on disk)
        if "deepspeed" in sections:
            _guard("deepspeed", device, lambda: deepspeed_step(device, dry, work, image_size))
    if "datasets" in sys.modules:
        SKIPPED.append("WARNING: `datasets` was imported on the suite's path")
    else:
        SKIPPED.append("datasets: not needed, never imported")
    print()
    print(format_table(device_name))
    print()
    for line in SKIPPED:
        print(f"skipped/optional: {line}")
    print(f"total {time.perf_counter() - started:.0f}s")
    if args.json is not None:
        payload = {"device": device_name, "dry_run": dry, "rows": ROWS, "skipped": SKIPPED}
        tmp_path = args.json.with_name(args.json.name + ".tmp")
        tmp_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_path, args.json)  # atomic
    return 1 if any(r["metric"] == "FAILED" for r in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
