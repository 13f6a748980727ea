"""Ablation sweeps: one evaluation JSON per value of one knob, and a plot (SkyLink Figure 2, Figure 3a, Table 2/6).

* ``top_k`` (how many of the retriever's candidates are re-ranked) needs no retraining: SkyLink scores each
  (query, candidate) pair on its own (S = wᵀh_last), so the top-``max(values)`` is scored once and every smaller
  top-k is re-ranked from those scores with :func:`skylink_model.evaluation.evaluate_reranking`.
* ``k`` (|G_z|, Eq. 3), ``threshold`` (T, Eq. 7), ``labels`` (soft / hard / gt-only), ``train_fraction``
  (Figure 3a), ``base_model`` (the backbone), ``loss`` (``bce`` / ``plackett-luce``, :mod:`skylink_model.losses`)
  and ``seed`` (the spread of one setting: training order, validation locations) retrain one run per value from a
  base configuration, then evaluate it with :func:`skylink_model.evaluation.evaluate`, the fused row's W chosen on
  that run's own validation locations.

Every point is written as ``<param>=<value>.json`` (+ its per-query JSON Lines) under ``out``; a point whose JSON
already exists is reused, so an interrupted sweep continues where it stopped (``overwrite`` redoes it).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylink_model.report._io import load_eval_json, load_per_query, write_text_atomic
from skylink_model.report.plots import plot_sweep

#: knob → how a value given on the command line is parsed. ``top_k`` is the only one that needs no training.
SWEEPABLE: dict[str, type] = {
    "top_k": int,
    "k": int,
    "threshold": float,
    "labels": str,
    "train_fraction": float,
    "base_model": str,
    "seed": int,
    "loss": str,
}


@dataclass
class SweepResult:
    param: str
    values: list[Any]
    eval_jsons: list[Path]
    plot: Path
    summary: Path

    def format_table(self) -> str:
        """One line per value: R@1 and AP of the retriever and of +SkyLink."""
        heads = ("retriever R@1", "+SkyLink R@1", "retriever AP", "+SkyLink AP")
        lines = [f"{self.param:>14}  " + "  ".join(f"{h:>13}" for h in heads)]
        for value, path in zip(self.values, self.eval_jsons, strict=True):
            rows = load_eval_json(path).rows
            cells = [(rows.get(r) or {}).get(m) for m in ("R@1", "AP") for r in ("retriever", "skylink")]
            text = [f"{c:.2f}" if isinstance(c, (int, float)) else "" for c in cells]
            lines.append(f"{str(value):>14}  " + "  ".join(f"{t:>13}" for t in text))
        return "\n".join(lines)


def parse_values(param: str, values: str | Sequence[Any]) -> list[Any]:
    """``"1,3,5"`` (or a list) → typed values for ``param``; ``ValueError`` for an unknown knob or a bad value."""
    if param not in SWEEPABLE:
        raise ValueError(f"cannot sweep {param!r}; choose one of {', '.join(SWEEPABLE)}")
    raw = [v.strip() for v in values.split(",")] if isinstance(values, str) else list(values)
    raw = [v for v in raw if v != ""]
    if not raw:
        raise ValueError("no value to sweep")
    try:
        typed = [SWEEPABLE[param](v) for v in raw]
    except ValueError:
        raise ValueError(f"{param} takes {SWEEPABLE[param].__name__} values, got {raw}") from None
    if len(set(typed)) != len(typed):
        raise ValueError(f"repeated values in {raw}")
    if param == "loss":
        from skylink_model.losses import LOSSES

        unknown = [v for v in typed if v not in LOSSES]
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; choose from {', '.join(LOSSES)}")
    return typed


def point_name(param: str, value: Any) -> str:
    """File-name stem of one sweep point, e.g. ``top_k=5`` or ``base_model=Qwen2-VL-2B-Instruct``."""
    text = Path(str(value)).name if param == "base_model" else str(value)
    return f"{param}=" + re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def run_sweep(
    param: str,
    values: str | Sequence[Any],
    out: str | Path,
    *,
    data: str | Path,
    config: str,
    split: str = "test",
    run: str | Path | None = None,
    base_config: Any = None,
    images_root: str | Path | None = None,
    top_k: int = 10,
    max_queries: int | None = None,
    batch_size: int = 16,
    train_kwargs: dict[str, Any] | None = None,
    metrics: Sequence[str] = ("R@1", "AP"),
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run one ablation grid into ``out``: ``<param>=<value>.json`` per value, ``<param>.png`` and ``sweep.json``.

    Args:
        param: one of :data:`SWEEPABLE`.
        values: the grid, e.g. ``"1,3,5,10"``.
        run: a trained SkyLink run folder. For ``top_k`` it is the model evaluated; for the other knobs its
            ``skylink_config.json`` is the base configuration (unless ``base_config`` is given).
        base_config: a :class:`~skylink_model.config.SkyLinkConfig` to vary (training knobs).
        top_k: the re-ranked top-k of the training sweeps' evaluations.
        train_kwargs: passed to :func:`skylink_model.train.train_skylink` (``max_steps``, ``micro_batch_size``...).
    """
    typed = parse_values(param, values)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if param == "top_k":
        if run is None:
            raise ValueError("a top_k sweep needs `run` (the trained SkyLink run to evaluate)")
        if min(typed) < 1:
            raise ValueError(f"top_k values must be ≥ 1, got {typed}")
        jsons = _sweep_top_k(typed, out, data=data, config=config, split=split, run=run, images_root=images_root,
                             max_queries=max_queries, batch_size=batch_size, device=device, overwrite=overwrite,
                             progress=progress)  # fmt: skip
    else:
        jsons = _sweep_training(param, typed, out, data=data, config=config, split=split, run=run,
                                base_config=base_config, images_root=images_root, top_k=top_k,
                                max_queries=max_queries, batch_size=batch_size, train_kwargs=train_kwargs or {},
                                device=device, overwrite=overwrite, progress=progress)  # fmt: skip
    points = [(v, load_eval_json(p).rows) for v, p in zip(typed, jsons, strict=True)]
    plot = plot_sweep(param, points, out / f"{param}.png", metrics=metrics, title=f"{config} / {split}")
    summary = {
        "param": param,
        "values": typed,
        "data": str(data),
        "config": config,
        "split": split,
        "points": [
            {"value": v, "eval_json": p.name, "rows": rows} for (v, rows), p in zip(points, jsons, strict=True)
        ],
        "plot": plot.name,
    }
    summary_path = write_text_atomic(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    return SweepResult(param, typed, jsons, plot, summary_path)


def _sweep_top_k(values: list[int], out: Path, *, data, config, split, run, images_root, max_queries, batch_size,
                 device, overwrite, progress) -> list[Path]:  # fmt: skip
    from skylink_model.evaluation import evaluate, evaluate_reranking

    largest = max(values)
    scored_json = out / f"{point_name('top_k', largest)}.json"
    scored_pq = out / f"{point_name('top_k', largest)}.per_query.jsonl"
    if overwrite or not scored_json.is_file() or not scored_pq.is_file():
        from skylink_model.model import SkyLinkModel

        model = SkyLinkModel.from_pretrained(run, device=device)
        evaluate(model, data, config, split, images_root=images_root, top_k=largest, batch_size=batch_size,
                 max_queries=max_queries, progress=progress, json_path=scored_json,
                 per_query_path=scored_pq)  # fmt: skip
    source = load_eval_json(scored_json)
    records = load_per_query(scored_pq)
    scores = {r["query_id"]: dict(zip(r["retrieved_ids"], r["scores"], strict=True)) for r in records}
    paths = []
    for k in values:
        path = out / f"{point_name('top_k', k)}.json"
        if k != largest:
            extra = {"rescored_from": scored_json.name, "sweep": {"param": "top_k", "value": k}}
            report = evaluate_reranking(records, scores, k, config=config, split=split,
                                        gallery_protocol=source.data.get("gallery_protocol"), data=str(data),
                                        gallery_size=source.data.get("gallery_size"),
                                        extra=extra)  # fmt: skip
            write_text_atomic(path, report.to_json())
        paths.append(path)
    return paths


def _sweep_training(param: str, values: list[Any], out: Path, *, data, config, split, run, base_config,
                    images_root, top_k, max_queries, batch_size, train_kwargs, device, overwrite,
                    progress) -> list[Path]:  # fmt: skip
    from skylink_model.config import SkyLinkConfig
    from skylink_model.data import read_validation
    from skylink_model.evaluation import evaluate
    from skylink_model.model import SkyLinkModel
    from skylink_model.train import train_skylink

    if base_config is None:
        if run is None:
            raise ValueError(f"a {param} sweep needs `run` (whose settings it varies) or `base_config`")
        base_config = SkyLinkConfig.from_pretrained(run)
    paths = []
    for value in values:
        name = point_name(param, value)
        json_path = out / f"{name}.json"
        paths.append(json_path)
        if json_path.is_file() and not overwrite:
            continue
        run_dir = out / "runs" / name
        if overwrite and run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        cfg = dataclasses.replace(base_config, **{param: value})
        if not (run_dir / "value_head.safetensors").is_file():
            train_skylink(cfg, data, config, out_dir=run_dir, images_root=images_root, device=device,
                          progress=progress, resume=run_dir.exists(), **train_kwargs)  # fmt: skip
        model = SkyLinkModel.from_pretrained(run_dir, device=device)
        evaluate(model, data, config, split, images_root=images_root, top_k=top_k, batch_size=batch_size,
                 max_queries=max_queries, progress=progress, json_path=json_path,
                 per_query_path=out / f"{name}.per_query.jsonl", validation=read_validation(run_dir))  # fmt: skip
    return paths
