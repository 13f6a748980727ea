"""One prepared GPU check of the paper's hardware path (SkyLink arXiv 2603.08063; issue 10), one table out.

Rows (each timed best-of-N after a warm-up, peak GPU memory per row):

- ``retriever``: images/s of a random-weight ``convnext_base`` (timm, Sample4Geo's backbone) at 384 px, bf16 autocast,
  channels_last, batch 64.
- ``search``: exact top-100 inner-product search of 1,000 queries in a 1M x 1024-d fp16 gallery on the GPU:
  faiss-gpu ``IndexFlatIP`` when importable, else ``torch.matmul`` + ``torch.topk`` in gallery chunks.
- ``rerank-2b`` / ``rerank-7b``: random-weight Qwen2-VL-2B / -7B (built from their published configs by
  ``benchmarks/rerank.py:build_model``; no download), LoRA r16 on language q/k/v + vision qkv, bf16, 384 px images:
  ms/query at k = 10 through ``rerank_query`` on the fast path (shared prefix + warm feature caches; the 2B/7B rows of
  ``benchmarks/rerank.py``) and on the naive per-pair path.
- ``train-2b`` / ``train-7b``: groups/s of one training group of k = 13 (forward, BCE Eq. 8, backward, AdamW step) with
  LoRA + non-reentrant gradient checkpointing, bf16 autocast.
- ``deepspeed``: one ZeRO-2 bf16 optimizer step of the 2B model in a 1-process DeepSpeed engine (the engine casts the
  whole module to bf16; the value head still computes in fp32) when ``deepspeed`` is importable.

Runs offline on a stock CUDA PyTorch stack (torch, transformers, peft, timm): the project's code is imported from
this checkout (no install needed), ``datasets`` is never imported, and optional parts that are missing (faiss-gpu,
DeepSpeed, timm) are listed as skipped. ``--dry-run`` runs every row at tiny sizes on the CPU (tiny Qwen2-VL,
``convnext_atto`` at 64 px, a 20k x 64 gallery) to check the script itself. Usage::

    python benchmarks/gpu_suite.py                 # sized for <= 6 minutes on one H100 (not yet run on one)
    python benchmarks/gpu_suite.py --dry-run       # CPU: 134 s on 2 shared cores
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
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


def _build(size: str, tiny_dir: Path, device: str) -> Any:
    from rerank import build_model  # benchmarks/rerank.py: the published Qwen2-VL sizes, random weights

    return build_model(size, tiny_dir, device, "auto")


def rerank_and_train(size: str, device: str, dry: bool, tiny_dir: Path, image_size: int, repeats: int) -> None:
    import numpy as np
    from PIL import Image

    from skylink_model.losses import RelationalSoftLabelLoss
    from skylink_model.rerank import FeatureCache, PixelCache, rerank_query

    label = f"{size} (tiny, dry run)" if dry else size
    dtype = "fp32" if dry else "bf16"
    model = _build("tiny" if dry else size, tiny_dir, device)
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

    _reset_peak(device)
    seconds = _best_of(fast, device, repeats)
    _row(f"rerank-{label}", f"k=10 fast (shared prefix, warm caches), {dtype}", seconds * 1e3, "ms/query", device)
    _reset_peak(device)
    seconds = _best_of(naive, device, repeats)
    _row(f"rerank-{label}", f"k=10 naive (every pair in full), {dtype}", seconds * 1e3, "ms/query", device)

    model.train()
    model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    labels = torch.tensor([[1.0] + [0.0] * 12], device=model.device)
    loss_fn = RelationalSoftLabelLoss()
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=not dry)

    def step() -> None:
        with autocast:
            scores = model.score_group(query, gallery[:13])
        loss_fn(scores.float().unsqueeze(0), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    _reset_peak(device)
    seconds = _best_of(step, device, repeats)
    _row(f"train-{label}", "k=13, LoRA + gradient checkpointing, AdamW step", 1.0 / seconds, "groups/s", device)


def deepspeed_step(device: str, dry: bool, tiny_dir: Path, image_size: int) -> None:
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
    model = _build("tiny" if dry else "2b", tiny_dir, device)
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
    parser.add_argument("--only", default="retriever,search,2b,7b,deepspeed", help="comma-separated sections")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row, best kept (default 3; 2 dry)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows there (atomically)")
    args = parser.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run on a CPU machine")
    device = "cpu" if dry else "cuda"
    device_name = "CPU dry run" if dry else torch.cuda.get_device_name(0)
    sections = set(args.only.split(","))
    image_size = 56 if dry else 384
    repeats = args.repeats or (2 if dry else 3)
    started = time.perf_counter()
    print(f"# gpu_suite on {device_name}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        from skylink_model.testing import make_tiny_qwen2_vl

        tiny_dir = make_tiny_qwen2_vl(Path(tmp) / "tiny")  # its processor serves the random 2B/7B models too
        if "retriever" in sections:
            _guard("retriever", device, lambda: retriever(device, dry))
        if "search" in sections:
            _guard("search", device, lambda: search(device, dry))
        for size in ("2b", "7b"):
            if size in sections:
                run = lambda s=size: rerank_and_train(s, device, dry, tiny_dir, image_size, repeats)  # noqa: E731
                _guard(f"qwen2-vl-{size}", device, run)
        if "deepspeed" in sections:
            _guard("deepspeed", device, lambda: deepspeed_step(device, dry, tiny_dir, image_size))
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
