"""SkyLink at the published shapes of every backbone family, random weights, on the CPU (issue 19, item 1).

For each family at its smallest published size (:data:`skylink_model.published_configs.SMALLEST`: Qwen2-VL-2B,
Qwen2.5-VL-3B, Qwen3-VL-2B, LLaVA-OneVision-0.5B) and, for scoring only, Qwen2-VL-7B when it fits in memory, one
subprocess (so each family's peak RSS is its own):

- builds the published config with random weights and the offline processor
  (:func:`skylink_model.published_configs.make_random_model`: a folder shaped like the Hub checkpoint) and loads it
  the way ``skyrank train`` does (:func:`skylink_model.model.get_skylink_model`: the backbone table's LoRA targets on
  both towers, the value head from lm_head[yes] - lm_head[no], the family's image budget). LoRA dropout is 0 (so the
  two training paths see the same network) and the LoRA B matrices are made non-zero, as after training;
- (a) scores one group of k = 10 on the fast path (``rerank_query``'s default: shared prefix + one vision pass) and
  on the naive path (every pair in full): max |delta score| in fp32, and in bf16 beside it;
- (b) one training step at k = 4 (relational soft-label loss, Eq. 8) with LoRA and gradient checkpointing on both
  paths: the loss is finite and the LoRA gradients agree (max over tensors of |g_fast - g_naive| / |g_naive|, 1e-3);
  then one AdamW step;
- (c) ``save_pretrained``, reload with ``SkyLinkModel.from_pretrained`` (``PeftModel.from_pretrained``) and score the
  same group: the same scores (1e-5), both scored on torch's thread count (the thread tuner off, so both sum alike);
- (d) ``export_vllm`` (what ``skyrank export-model --format vllm`` runs) and ``score_exported`` with plain
  transformers: within 1e-4 of (c);
- (e) peak RSS per phase (``VmHWM``, reset between phases), seconds per group and per step, image tokens per image
  at the paper's 384 px and at the size run.

A family without the fast path (``supports_shared_prefix`` False) is scored on both paths anyway (the "fast" call
falls back to the naive one, so its delta is 0) and the table says "fallback". The precision is fp32 where
:func:`skylink_model.plan.estimate` says the family fits in the memory available when its subprocess starts, else
bf16 (named in the table). Exit status 1 when any equality fails. Usage::

    python benchmarks/real_shapes.py --json real_shapes.json          # all families (BENCHMARKS.md: times)
    python benchmarks/real_shapes.py --families llava_onevision --layers 2   # a quick check of the script
    python benchmarks/real_shapes.py --table real_shapes.json          # re-print the table (plan beside peaks)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from skylink_model.published_configs import SMALLEST  # noqa: E402

#: run name -> (model id, scoring only)
RUNS: dict[str, tuple[str, bool]] = {**{family: (mid, False) for family, mid in SMALLEST.items()},
                                     "qwen2_vl_7b": ("Qwen/Qwen2-VL-7B-Instruct", True)}  # fmt: skip
#: The order of a full run: the two families whose fast path is newest right after the reference one, the one that
#: may need bf16 next, the 7B last.
ORDER = ("qwen2_vl", "qwen3_vl", "llava_onevision", "qwen2_5_vl", "qwen2_vl_7b")
TOLERANCES = {"score_fp32": 1e-4, "grad_rel": 1e-3, "reload": 1e-5, "export": 1e-4, "bf16_rel": 0.15}
# bf16 runs: differences relative to the largest |score| of the group (or of the gradient), at 0.15: twice the 7.5%
# by which the fast and naive paths of Qwen2-VL-2B differ in bf16 while they agree to 8e-6 in fp32 (BENCHMARKS.md).
# (d) then compares the fp32 export with the bf16 run, so it measures bf16 rounding, not the export.


def evaluate_checks(row: dict[str, Any]) -> dict[str, bool]:
    """The equalities of one row from its measured differences (the tolerances above)."""
    fp32 = row["precision"] == "float32"
    bf16_tol = TOLERANCES["bf16_rel"] * row["score_scale"]
    checks = {}
    if fp32:
        checks["a_fast_equals_naive_fp32"] = row["max_abs_diff_fp32"] <= TOLERANCES["score_fp32"]
    else:
        checks["a_fast_equals_naive_bf16"] = row["max_abs_diff_bf16"] <= bf16_tol
    if "loss" in row:
        checks["b_loss_finite"] = bool(np.isfinite(row["loss"]))
    if "grad_rel_diff" in row:
        checks["b_lora_grads_equal"] = row["grad_rel_diff"] <= TOLERANCES["grad_rel" if fp32 else "bf16_rel"]
    if "reload_max_abs_diff" in row:
        checks["c_reload_same_scores"] = row["reload_max_abs_diff"] <= TOLERANCES["reload"]
    if "export_max_abs_diff" in row:
        checks["d_export_scores_match"] = row["export_max_abs_diff"] <= (TOLERANCES["export"] if fp32 else bf16_tol)
    return checks


PROMPT_K, TRAIN_K, RELOAD_K = 10, 4, 2  # scoring group, training group, pairs scored after reload / export


# ---------------------------------------------------------------------------------------------- memory
def reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux ``clear_refs`` 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_gib() -> float:
    return _status_kib("VmHWM") / 2**20


def rss_gib() -> float:
    return _status_kib("VmRSS") / 2**20


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


# ---------------------------------------------------------------------------------------------- child
def _images(n: int, size: int, seed: int) -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _image_tokens(model: Any, size: int) -> float:
    """Image tokens per image of one pair at ``size`` px (the processor's expansion, counted)."""
    image = _images(1, size, seed=99)[0]
    inputs = model.build_pair_inputs([image], [image])
    base = model.backbone.get_base_model().config
    image_id = getattr(base, "image_token_id", None) or base.image_token_index
    return float((inputs["input_ids"] == image_id).sum()) / 2


def _lora_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().clone() for n, p in model.lora_parameters().items() if p.grad is not None}


def _grad_rel_diff(fast: dict[str, torch.Tensor], naive: dict[str, torch.Tensor]) -> float:
    """max over LoRA tensors of ||g_fast - g_naive|| / ||g_naive|| (tensors with a zero naive gradient skipped)."""
    worst = 0.0
    for name, g in naive.items():
        norm = float(g.norm())
        if norm > 0:
            worst = max(worst, float((fast[name] - g).norm()) / norm)
    return worst


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_family(
    name: str, work: Path, precision: str, image_size: int, layers: int | None, skip_export: str = ""
) -> dict[str, Any]:
    """(a)-(e) for one family in this process (see the module docstring); returns the row."""
    from skylink_model.config import SkyLinkConfig
    from skylink_model.losses import RelationalSoftLabelLoss
    from skylink_model.model import SkyLinkModel, get_skylink_model
    from skylink_model.prefix import set_thread_tuning
    from skylink_model.published_configs import make_random_model
    from skylink_model.rerank import rerank_query
    from skylink_model.serving import export_vllm, score_exported

    model_id, scoring_only = RUNS[name]
    row: dict[str, Any] = {"run": name, "model_id": model_id, "precision": precision, "image_size": image_size,
                           "layers": layers, "k": PROMPT_K, "train_k": TRAIN_K, "threads": torch.get_num_threads(),
                           "checks": {}, "seconds": {}, "peak_gib": {},
                           "baseline_rss_gib": round(rss_gib(), 2)}  # fmt: skip
    seconds, peaks = row["seconds"], row["peak_gib"]

    def phase_done(key: str) -> None:
        peaks[key] = round(peak_gib(), 2)
        print(f"[{name}] {key}: peak RSS {peaks[key]:.2f} GiB, {time.perf_counter() - started:.0f}s", flush=True)
        reset_peak()

    started = time.perf_counter()
    reset_peak()
    base_dir, seconds["build"] = _timed(lambda: make_random_model(model_id, work / "base", layers=layers))
    phase_done("build")
    torch.manual_seed(0)
    config = SkyLinkConfig(base_model=str(base_dir), dtype=precision, lora_dropout=0.0, head_init="yes-no",
                           gradient_checkpointing=False)  # fmt: skip
    model, seconds["load"] = _timed(lambda: get_skylink_model(config, device="cpu"))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero adapters, as after training
        for pname, p in model.lora_parameters().items():
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model.eval()
    row["fast_path"] = bool(model.supports_shared_prefix)
    row["shared_vision"] = bool(model.supports_shared_vision)
    row["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    row["frozen_params"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    row["image_tokens_384"] = _image_tokens(model, 384)
    row["image_tokens_run"] = _image_tokens(model, image_size)
    query, *gallery = _images(PROMPT_K + 1, image_size, seed=0)
    ids = model.build_pair_inputs([query], [gallery[0]])["input_ids"]
    row["pair_tokens"] = int(ids.shape[1])
    phase_done("load")

    def score_both(m: Any, cands: list) -> tuple[torch.Tensor, torch.Tensor, float | None, float]:
        naive, t_naive = _timed(
            lambda: rerank_query(m, query, cands, batch_size=len(cands), shared_prefix=False, shared_vision=False)
        )
        if not row["fast_path"]:  # rerank_query would run the same naive computation again
            return naive, naive, None, t_naive
        fast, t_fast = _timed(lambda: rerank_query(m, query, cands, batch_size=len(cands)))
        return fast, naive, t_fast, t_naive

    # (a) k = 10, the model's precision
    fast, naive, seconds["score_fast"], seconds["score_naive"] = score_both(model, gallery)
    row[f"max_abs_diff_{'fp32' if precision == 'float32' else 'bf16'}"] = float((fast - naive).abs().max())
    row["score_scale"] = float(naive.abs().max())
    phase_done("score")

    if not scoring_only:
        # (b) one training step at k = 4 with gradient checkpointing, both paths
        model.enable_gradient_checkpointing()
        model.train()
        cands = gallery[:TRAIN_K]
        labels = torch.tensor([[1.0, 0.95, 0.0, 0.0]])
        loss_fn = RelationalSoftLabelLoss()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)

        def step(fast_path: bool) -> tuple[float, dict[str, torch.Tensor]]:
            model.zero_grad(set_to_none=True)
            if fast_path:
                q = model.process_images([query])[0]
                inputs = model.group_inputs(q, model.process_images(cands))
            else:
                inputs = model.build_pair_inputs([query] * len(cands), cands)
            loss = loss_fn(model(**inputs).float().unsqueeze(0), labels)
            loss.backward()
            return float(loss.detach()), _lora_grads(model)

        (loss_naive, g_naive), seconds["train_step_naive"] = _timed(lambda: step(False))
        row["loss"] = loss_naive
        if row["fast_path"]:
            (loss_fast, g_fast), seconds["train_step_fast"] = _timed(lambda: step(True))
            row["grad_rel_diff"] = _grad_rel_diff(g_fast, g_naive)
            row["loss_abs_diff"] = abs(loss_fast - loss_naive)
        row["lora_tensors_with_grad"] = len(g_naive)
        del g_naive
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        phase_done("train")

        # (c) save, reload with PeftModel.from_pretrained, same scores. Both scored on torch's thread count (the
        # tuner off): a thread count of the tuner's choosing splits BLAS's sums differently, 1e-5 in fp32 at 36 layers
        model.eval()
        set_thread_tuning(model, False)
        cands = gallery[:RELOAD_K]
        before = rerank_query(model, query, cands, batch_size=len(cands))
        run_dir = work / "run"
        model.save_pretrained(run_dir)
        model = optimizer = trainable = None  # free the trained model before reloading it
        gc.collect()
        reset_peak()
        model, seconds["reload"] = _timed(lambda: SkyLinkModel.from_pretrained(run_dir, device="cpu", dtype=precision))
        set_thread_tuning(model, False)
        after = rerank_query(model, query, cands, batch_size=len(cands))
        row["reload_max_abs_diff"] = float((after - before).abs().max())
        phase_done("reload")

    if precision == "float32":  # (a) in bf16 beside it: the same weights cast, both paths
        model.backbone.to(torch.bfloat16)
        fast_bf16, naive_bf16, seconds["score_fast_bf16"], seconds["score_naive_bf16"] = score_both(model, gallery)
        row["max_abs_diff_bf16"] = float((fast_bf16 - naive_bf16).abs().max())
        phase_done("score_bf16")
    model = None
    gc.collect()
    reset_peak()

    if not scoring_only and skip_export:
        row["export_skipped"] = skip_export
    elif not scoring_only:
        # (d) export-model --format vllm, reload with transformers
        out, seconds["export"] = _timed(lambda: export_vllm(run_dir, work / "export"))
        gc.collect()  # the merged model's module graph holds cycles: free it before loading the export
        phase_done("export")
        exported = score_exported(out, [query] * len(cands), cands, batch_size=len(cands))
        row["export_max_abs_diff"] = float((exported - before).abs().max())
        phase_done("export_score")
    row["seconds"] = {k: None if v is None else round(v, 2) for k, v in seconds.items()}
    row["checks"] = evaluate_checks(row)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


# ---------------------------------------------------------------------------------------------- parent
def plan_for(name: str, precision: str, image_size: int, row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plan's CPU estimates for this run (scoring at k = 10, training at k = 4 with checkpointing)."""
    from skylink_model.plan import PlanInputs, estimate

    model_id, _ = RUNS[name]
    dtype = "float32" if precision == "float32" else "bfloat16"
    common = {"model": model_id, "image_size": image_size, "dtype": dtype, "device": "cpu", "offline": True}
    score = estimate(PlanInputs(**common, k=PROMPT_K, mode="eval", shared_prefix=False))
    train = estimate(PlanInputs(**common, k=TRAIN_K, mode="train", gradient_checkpointing=True, shared_prefix=False))
    return {"score_gib": score.memory_gib["total"], "train_gib": train.memory_gib["total"],
            "load_gib": score.memory_gib["load"], "export_gib": score.memory_gib["export_merge"]}  # fmt: skip


def choose_precision(name: str, image_size: int, requested: str, spare: float) -> tuple[str | None, str]:
    """fp32 where the plan's largest phase fits in the memory available now less ``spare`` GiB, else bf16 (``auto``),
    or the requested precision if it fits; ``None`` and why when nothing fits."""
    reasons: list[str] = []
    avail = available_gib()
    for precision in ("float32", "bfloat16") if requested == "auto" else (requested,):
        p = plan_for(name, precision, image_size)
        need = max(p["score_gib"], p["train_gib"]) if not RUNS[name][1] else p["score_gib"]
        if need + spare <= avail:
            return precision, f"plan {need:.1f} GiB, {avail:.1f} GiB available"
        reason = (f"{'fp32' if precision == 'float32' else 'bf16'} needs {need:.1f} GiB by the plan; {avail:.1f} GiB "
                  f"available, {spare:.0f} kept for the machine's other jobs")  # fmt: skip
        reasons.append(reason)
    return None, "; ".join(reasons)


def run_child(
    name: str, precision: str, image_size: int, layers: int | None, timeout: int, skip_export: str,
    threads: int | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"real_shapes_{name}_") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--child", name, "--precision", precision, "--image-size", str(image_size),
               "--work", tmp, "--json", str(out)] + (["--layers", str(layers)] if layers else [])
        cmd += ["--skip-export", skip_export] if skip_export else []
        cmd += ["--threads", str(threads)] if threads else []  # fmt: skip
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {"run": name, "error": f"timed out after {timeout}s", "checks": {"finished": False}}
        if code != 0 or not out.is_file():
            return {"run": name, "error": f"exit status {code}", "checks": {"finished": False}}
        return json.loads(out.read_text())


def _fmt(x: Any, spec: str = ".1e") -> str:
    return "–" if x is None else format(x, spec)


CHECK_LABELS = {"a_fast_equals_naive_fp32": "a", "a_fast_equals_naive_bf16": "a", "b_loss_finite": "b loss",
                "b_lora_grads_equal": "b grads", "c_reload_same_scores": "c", "d_export_scores_match": "d"}


def format_table(rows: list[dict[str, Any]]) -> str:
    """One markdown table: a row per family, the plan's memory beside each measured peak."""
    head = ("| model | precision | fast path | image tokens/image (384 px; run) | (a) max abs diff fp32 / bf16 "
            "| (b) loss, LoRA grad rel diff | (c) reload diff | (d) export diff | s per group fast / naive "
            "| s per step fast / naive | peak RSS GiB score / train (plan) | peak RSS GiB load / export (plan) "
            "| checks |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r.get('model_id', r['run'])} | – | – | – | – | – | – | – | – | – | – | – | "
                         f"{r.get('error') or 'skipped: ' + r['skipped']} |")  # fmt: skip
            continue
        s, pk = r["seconds"], r["peak_gib"]
        plan = r.get("plan", {})
        fast = "yes" if r["fast_path"] else "fallback (naive)"
        score_peak = f"{pk.get('score', 0):.1f} ({plan.get('score_gib', 0):.1f})"
        train_peak = f"{pk['train']:.1f} ({plan.get('train_gib', 0):.1f})" if "train" in pk else "–"
        load_peak = f"{pk['load']:.1f} ({plan['load_gib']:.1f})" if "load" in pk and "load_gib" in plan else "–"
        export_peak = f"{pk['export']:.1f} ({plan.get('export_gib', 0):.1f})" if "export" in pk else "–"
        checks = ", ".join(f"{CHECK_LABELS.get(c, c)} {'ok' if ok else 'FAIL'}" for c, ok in r["checks"].items())  # noqa: E501
        loss = f"{r['loss']:.3f}, {_fmt(r.get('grad_rel_diff'))}" if "loss" in r else "scoring only"
        prec = "fp32" if r["precision"] == "float32" else "bf16"
        if r.get("precision_note"):
            prec += f" ({r['precision_note']})"
        lines.append(
            f"| {r['model_id']}{' (layers ' + str(r['layers']) + ')' if r.get('layers') else ''} | {prec} | {fast} "
            f"| {r['image_tokens_384']:.0f}; {r['image_tokens_run']:.0f} at {r['image_size']} px "
            f"| {_fmt(r.get('max_abs_diff_fp32'))} / {_fmt(r.get('max_abs_diff_bf16'))} | {loss} "
            f"| {_fmt(r.get('reload_max_abs_diff'))} "
            f"| {r.get('export_skipped') or _fmt(r.get('export_max_abs_diff'))} "
            f"| {_fmt(s.get('score_fast'), '.1f')} / {s['score_naive']:.1f} "
            f"| {_fmt(s.get('train_step_fast'), '.1f')} / {_fmt(s.get('train_step_naive'), '.1f')} "
            f"| {score_peak} / {train_peak} | {load_peak} / {export_peak} | {checks} |"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="example: python benchmarks/real_shapes.py --json real_shapes.json")
    parser.add_argument("--families", default=",".join(ORDER), help=f"comma-separated runs of: {', '.join(RUNS)}")
    parser.add_argument("--image-size", type=int, default=112,
                        help="square image side for scoring and training (LLaVA-OneVision always runs at 384)")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto: fp32 where the plan says it fits in the memory available, else bf16")
    parser.add_argument("--spare-gib", type=float, default=4.0,
                        help="memory left to the machine's other jobs when choosing fp32/bf16 (GiB)")
    parser.add_argument("--precision-note", default="", help="why this precision (shown in the table)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in each family's process (default: torch's own)")
    parser.add_argument("--layers", type=int, default=None, help="truncate every tower (script check only)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per family")
    parser.add_argument("--json", type=Path, default=None, help="write the rows there (atomically)")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="print the table of earlier --json files and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--skip-export", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:  # one family in this process, which does nothing else: freed activations go back to the system
        from skylink_model.cpu_allocator import fix_mmap_threshold

        fix_mmap_threshold()
        row = run_family(args.child, args.work, args.precision, args.image_size, args.layers, args.skip_export)
        args.json.write_text(json.dumps(row, indent=2) + "\n")
        return 0
    if args.table:
        rows = [r for path in args.table for r in json.loads(path.read_text())["rows"]]
        for r in rows:
            if "precision" in r and "error" not in r:
                r["plan"] = r.get("plan") or plan_for(r["run"], r["precision"], r["image_size"])
                r["checks"] = evaluate_checks(r)
        print(format_table(rows))
        return 1 if any(not all(r["checks"].values()) for r in rows) else 0

    started = time.perf_counter()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"# real shapes on {os.cpu_count()} CPUs, torch {torch.__version__}, load {' '.join(load)}", flush=True)
    rows = []
    for name in args.families.split(","):
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; choose from {', '.join(RUNS)}")
        precision, note = choose_precision(name, args.image_size, args.precision, args.spare_gib)
        print(f"# {name}: {precision or 'not run'} ({note})", flush=True)
        if precision is None:
            rows.append({"run": name, "model_id": RUNS[name][0], "skipped": note, "checks": {}})
            continue
        skip_export = ""
        if not RUNS[name][1]:  # export-model merges in fp32 on the CPU whatever the run's precision
            need = plan_for(name, precision, args.image_size)["export_gib"]
            if need + args.spare_gib > available_gib():
                skip_export = f"export merges in fp32: {need:.1f} GiB by the plan, {available_gib():.1f} available"
        row = run_child(name, precision, args.image_size, args.layers, args.timeout, skip_export, args.threads)
        row["precision_note"] = args.precision_note or ("" if precision == "float32" else note)
        if "error" not in row:
            row["plan"] = plan_for(name, precision, args.image_size)
        row["load_before"] = load
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k in ("checks", "seconds", "peak_gib", "plan")}), flush=True)
        _write(args.json, rows)  # after every family, so a run cut short keeps what it measured
    table = format_table(rows)
    print(table)
    failed = [r["run"] for r in rows if not all(r["checks"].values())]
    print(f"total {time.perf_counter() - started:.0f}s; load {Path('/proc/loadavg').read_text().split()[:3]}; "
          f"{'FAILED: ' + ', '.join(failed) if failed else 'all equalities hold'}")  # fmt: skip
    _write(args.json, rows)
    return 1 if failed else 0


def _write(path: Path | None, rows: list[dict[str, Any]]) -> None:
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"rows": rows, "tolerances": TOLERANCES}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
