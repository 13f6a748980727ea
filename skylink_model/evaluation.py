"""Table-1 evaluation of SkyLink re-ranking (arXiv 2603.08063, Table 1 and appendix A.1).

The retriever row is computed from the dataset's own ``positive_ranks`` and ``retrieved_ids`` columns, so no
retriever is needed. A re-ranker (SkyLink, or the listwise prompt baseline of appendix A.8) supplies one score per
candidate of each query's top-k; the top-k is re-ordered by score (ties keep the retriever's order), positives
beyond the top-k keep their full-ranking ranks, and the metrics are recomputed:

* R@1/5/10 — a query counts if any positive is in the top K.
* AP — the Market-1501 / University-1652 AP over the full ranking with only the top-k permuted.
* AP_conservative — the paper's re-rank AP (appendix A.1): AP over the re-ranked top-k list, 0 when no positive
  is in it.

The per-query maths lives in :mod:`skyrank.metrics`; this module only orchestrates it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyrank import metrics
from skyrank.format import rules

METRIC_NAMES: tuple[str, ...] = ("R@1", "R@5", "R@10", "AP", "AP_conservative")

AP_CONVENTIONS: dict[str, str] = {
    "AP": (
        "Market-1501 / University-1652 AP over the full ranking (trapezoid rule: a single positive at rank r gives 1 "
        "if r = 1, else 1/(2r)); re-ranking permutes only the top-k, positives beyond it keep their ranks"
    ),
    "AP_conservative": (
        "SkyLink appendix A.1 re-rank AP: AP over the re-ranked top-k list only, 0 when no positive is in the top-k"
    ),
}

PROTOCOL = (
    "re-rank the retriever's top-k (retrieved_ids[:top_k]) by the re-ranker's score, ties broken by retriever "
    "order; the ground truth may be absent from the top-k; R@K and AP from the new 1-based ranks of every positive"
)


def reranked_topk(retrieved_ids: Sequence[str], scores: Mapping[str, float], top_k: int) -> list[str]:
    """The top-k of ``retrieved_ids`` sorted by descending score; ties keep the retriever's order
    (:func:`skyrank.format.rules.rerank_order`, the permutation :func:`skylink_model.rerank.rerank_topk` applies).

    Raises ``KeyError`` naming the candidate when ``scores`` lacks one of the top-k ids.
    """
    top = [str(i) for i in list(retrieved_ids)[:top_k]]
    missing = [i for i in top if i not in scores]
    if missing:
        raise KeyError(f"no score for candidate(s) {missing[:5]} of the top-{top_k}")
    return [top[j] for j in rules.rerank_order([float(scores[i]) for i in top])]


def _query_metrics(ranks: Sequence[int], topk_ids: Sequence[str], positive_ids: Sequence[str]) -> dict[str, float]:
    return {
        "R@1": float(metrics.recall_at_k(ranks, 1)),
        "R@5": float(metrics.recall_at_k(ranks, 5)),
        "R@10": float(metrics.recall_at_k(ranks, 10)),
        "AP": float(metrics.average_precision(ranks)),
        "AP_conservative": float(metrics.conservative_ap(list(topk_ids), list(positive_ids))),
    }


def _mean_percent(per_query: list[dict[str, float]]) -> dict[str, float]:
    n = len(per_query)
    return {m: 100.0 * sum(q[m] for q in per_query) / n for m in METRIC_NAMES}


@dataclass
class EvalReport:
    """The rows of Table 1 for one config/split (all metrics in percent)."""

    config: str
    split: str
    top_k: int
    num_queries: int
    rows: dict[str, dict[str, float]]
    ap_conventions: dict[str, str] = field(default_factory=lambda: dict(AP_CONVENTIONS))
    protocol: str = PROTOCOL
    gallery_protocol: str | None = None
    data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text

    def format_table(self) -> str:
        """A console table: one line per row (retriever, re-rankers, improvements)."""
        labels = {
            "retriever": "Retriever",
            "skylink": "+SkyLink",
            "prompt_baseline": "+Listwise prompt",
            "improvement": "Improvement",
            "improvement_prompt_baseline": "Improvement (prompt)",
        }
        width = max(len(labels.get(name, name)) for name in self.rows)
        head = f"{'':<{width}}  " + "  ".join(f"{m:>15}" for m in METRIC_NAMES)
        lines = [
            f"{self.config} / {self.split}: {self.num_queries} queries, re-ranking the top-{self.top_k}",
            head,
            "-" * len(head),
        ]
        for name, row in self.rows.items():
            signed = name.startswith("improvement")
            cells = "  ".join(f"{row[m]:>+15.2f}" if signed else f"{row[m]:>15.2f}" for m in METRIC_NAMES)
            lines.append(f"{labels.get(name, name):<{width}}  {cells}")
        lines.append("AP: Market-1501 full-ranking AP (top-k permuted); AP_conservative: AP within the top-k (A.1).")
        if self.gallery_protocol:
            lines.append(f"Gallery protocol: {self.gallery_protocol}")
        if "prompt_unparsable" in self.extra:
            n_bad = self.extra["prompt_unparsable"]
            lines.append(f"Listwise prompt: {n_bad} candidate score(s) unparsable (scored 0).")
        return "\n".join(lines)


def _rerank_rows(rows: list[Mapping[str, Any]], scores_by_query: Mapping[str, Mapping[str, float]], top_k: int):
    per_query = []
    for row in rows:
        qid = str(row["query_id"])
        if qid not in scores_by_query:
            raise KeyError(f"no re-ranker scores for query {qid!r}")
        positive_ids = [str(p) for p in row["positive_ids"]]
        try:
            topk_ids = reranked_topk(row["retrieved_ids"], scores_by_query[qid], top_k)
        except KeyError as err:
            raise KeyError(f"query {qid!r}: {err.args[0]}") from None
        # k = len(top-k list): a gallery smaller than top_k gives a shorter list.
        ranks = metrics.rerank_positive_ranks(topk_ids, positive_ids, list(row["positive_ranks"]), len(topk_ids))
        per_query.append(_query_metrics(ranks, topk_ids, positive_ids))
    return _mean_percent(per_query)


def per_query_records(
    rows: Iterable[Mapping[str, Any]], scores_by_query: Mapping[str, Mapping[str, float]] | None, top_k: int
) -> list[dict[str, Any]]:
    """One record per query: the retriever's top-k and, with scores, the re-ranker's scores and order.

    Keys: ``query_id``, ``gt_id``, ``positive_ids``, ``positive_ranks`` (retriever, full ranking),
    ``retrieved_ids``/``retrieved_scores`` (the top-k), and with scores ``scores`` (aligned with
    ``retrieved_ids``), ``reranked_ids`` (:func:`reranked_topk`) and ``reranked_positive_ranks``
    (:func:`skyrank.metrics.rerank_positive_ranks`). The contact sheets and R@K curves of
    :mod:`skylink_model.report` read these.
    """
    out = []
    for row in rows:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        raw_scores = row.get("retrieved_scores")
        rec: dict[str, Any] = {
            "query_id": qid,
            "gt_id": str(row["gt_id"]) if row.get("gt_id") is not None else None,
            "positive_ids": [str(p) for p in row["positive_ids"]],
            "positive_ranks": [int(r) for r in row["positive_ranks"]],
            "retrieved_ids": top,
            "retrieved_scores": [float(x) for x in list(raw_scores)[: len(top)]] if raw_scores is not None else None,
        }
        if scores_by_query is not None:
            scores = scores_by_query[qid]
            order = reranked_topk(top, scores, top_k)
            rec["scores"] = [float(scores[c]) for c in top]
            rec["reranked_ids"] = order
            rec["reranked_positive_ranks"] = metrics.rerank_positive_ranks(
                order, rec["positive_ids"], rec["positive_ranks"], len(order)
            )
        out.append(rec)
    return out


def write_per_query(path: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write :func:`per_query_records` as JSON Lines, atomically (a ``.tmp`` sibling renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, path)
    return path


def evaluate_reranking(
    rows: Iterable[Mapping[str, Any]],
    scores_by_query: Mapping[str, Mapping[str, float]] | None,
    top_k: int = 10,
    *,
    prompt_scores_by_query: Mapping[str, Mapping[str, float]] | None = None,
    config: str = "",
    split: str = "",
    gallery_protocol: str | None = None,
    data: str | None = None,
    extra: dict[str, Any] | None = None,
) -> EvalReport:
    """Table 1 for SkyRank retriever rows and re-ranker scores.

    Args:
        rows: SkyRank retriever rows (``query_id``, ``positive_ids``, ``positive_ranks``, ``retrieved_ids``); a
            ``datasets.Dataset`` works.
        scores_by_query: ``{query_id: {candidate_id: score}}`` covering each query's top-k (SkyLink's S); ``None``
            gives the retriever row only (plus the prompt baseline if given).
        top_k: how many of the retriever's candidates are re-ranked (the paper: 10).
        prompt_scores_by_query: the same for the listwise prompt baseline (appendix A.8).

    Returns:
        An :class:`EvalReport` with rows ``retriever``, ``skylink`` and ``improvement`` (skylink − retriever, in
        points), and ``prompt_baseline`` / ``improvement_prompt_baseline`` when prompt scores are given.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be ≥ 1, got {top_k}")
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to evaluate")
    retriever = []
    for row in rows:
        positive_ids = [str(p) for p in row["positive_ids"]]
        ranks = [int(r) for r in row["positive_ranks"]]
        topk_ids = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        retriever.append(_query_metrics(ranks, topk_ids, positive_ids))
    table: dict[str, dict[str, float]] = {"retriever": _mean_percent(retriever)}
    if scores_by_query is not None:
        table["skylink"] = _rerank_rows(rows, scores_by_query, top_k)
    if prompt_scores_by_query is not None:
        table["prompt_baseline"] = _rerank_rows(rows, prompt_scores_by_query, top_k)
    base = table["retriever"]
    if "skylink" in table:
        table["improvement"] = {m: table["skylink"][m] - base[m] for m in METRIC_NAMES}
    if "prompt_baseline" in table:
        table["improvement_prompt_baseline"] = {m: table["prompt_baseline"][m] - base[m] for m in METRIC_NAMES}
    return EvalReport(
        config=config,
        split=split,
        top_k=top_k,
        num_queries=len(rows),
        rows=table,
        gallery_protocol=gallery_protocol,
        data=data,
        extra=dict(extra or {}),
    )


def evaluate(
    model: Any,
    data: str | Path,
    config: str,
    split: str = "test",
    *,
    images_root: str | Path | None = None,
    top_k: int = 10,
    batch_size: int = 16,
    max_queries: int | None = None,
    progress: bool = True,
    baseline: str | None = None,
    baseline_model: Any = None,
    baseline_processor: Any = None,
    max_new_tokens: int | None = None,
    gallery_protocol: str | None = None,
    cache_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    per_query_path: str | Path | None = None,
    shared_prefix: bool = True,
    feature_cache_mb: float = 1024.0,
) -> EvalReport:
    """Evaluate a SkyLink model (and/or the listwise prompt baseline) on one SkyRank split.

    Loads the split with :func:`skylink_model.data.load_skyrank_split`, re-ranks every query's top-k with
    :func:`skylink_model.rerank.rerank_query` (query vision features computed once per query), and builds the
    report with :func:`evaluate_reranking`.

    Args:
        model: a :class:`~skylink_model.model.SkyLinkModel`, or ``None`` for no SkyLink row.
        baseline: ``"prompt"`` to add the listwise prompt baseline (appendix A.8). Its LVLM is
            ``baseline_model``/``baseline_processor`` (a ``...ForConditionalGeneration`` and its processor); when
            not given, the base model of ``model`` is used with its LoRA adapters disabled.
        max_queries: evaluate only the first N queries (sorted by id, as stored).
        json_path: also write the report's JSON there.
        per_query_path: also write SkyLink's per-query scores and orders there (JSON Lines,
            :func:`per_query_records`); the report's ``extra["per_query"]`` names the file (relative to the JSON's
            folder when it lies beside it). ``skyrank show`` and ``skyrank sweep`` read it.
        shared_prefix: score each query's candidates on one shared prefix (:mod:`skylink_model.prefix`; default);
            ``False`` scores every pair in full (the naive path).
        feature_cache_mb: memory bound of the gallery vision-feature cache (LRU,
            :class:`~skylink_model.rerank.FeatureCache`) used with ``shared_prefix``; 0 turns it off. The model is
            frozen here, so cached features stay valid.

    ``extra`` records ``skylink_ms_per_query`` (re-ranking time per query, image loading excluded) and the cache's
    hits and misses; ``prompt_ms_per_query`` likewise for the baseline.
    """
    from skylink_model.data import load_skyrank_split

    if baseline not in (None, "prompt"):
        raise ValueError(f"`baseline` must be None or 'prompt', got {baseline!r}")
    if model is None and baseline is None:
        raise ValueError("nothing to evaluate: pass a SkyLink model and/or baseline='prompt'")
    started = time.perf_counter()
    split_data = load_skyrank_split(data, config, split, images_root=images_root, cache_dir=cache_dir)
    rows_ds = split_data.rows
    if max_queries is not None:
        rows_ds = rows_ds.select(range(min(max_queries, len(rows_ds))))
    rows = [dict(r) for r in rows_ds]
    images = split_data.images

    skylink_scores: dict[str, dict[str, float]] | None = None
    prompt_scores: dict[str, dict[str, float]] | None = None
    extra: dict[str, Any] = {}
    iterator: Iterable[dict] = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=f"re-ranking {config}/{split}", unit="query")

    pixel_cache = None
    if model is not None:
        from skylink_model.rerank import FeatureCache, PixelCache, rerank_query

        skylink_scores = {}
        pixel_cache = PixelCache() if getattr(model, "supports_shared_vision", False) else None
        if feature_cache_mb < 0:
            raise ValueError(f"`feature_cache_mb` must be ≥ 0, got {feature_cache_mb}")
        use_features = shared_prefix and feature_cache_mb > 0 and getattr(model, "supports_shared_prefix", False)
        feature_cache = FeatureCache(int(feature_cache_mb * 2**20)) if use_features else None
    if baseline == "prompt":
        from skylink_model.prompt_baseline import score_listwise

        prompt_scores = {}
        extra["prompt_unparsable"] = 0
        if baseline_model is None or baseline_processor is None:
            if model is None:
                raise ValueError("baseline='prompt' needs baseline_model and baseline_processor (or a SkyLink model)")
            baseline_model = model.backbone
            baseline_processor = model.processor
    skylink_seconds = prompt_seconds = 0.0
    for row in iterator:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        query_image = images(qid)
        candidate_images = images.many(top)
        if model is not None:
            tic = time.perf_counter()
            scores = rerank_query(
                model, query_image, candidate_images, batch_size=batch_size, candidate_keys=top, cache=pixel_cache,
                shared_prefix=shared_prefix, feature_cache=feature_cache,
            )  # fmt: skip
            skylink_seconds += time.perf_counter() - tic
            skylink_scores[qid] = dict(zip(top, scores.tolist(), strict=True))
        if prompt_scores is not None:
            tic = time.perf_counter()
            with _adapters_disabled(baseline_model):
                result = score_listwise(
                    baseline_model, baseline_processor, query_image, candidate_images, max_new_tokens
                )
            prompt_scores[qid] = dict(zip(top, result.scores, strict=True))
            extra["prompt_unparsable"] += result.n_unparsable
            prompt_seconds += time.perf_counter() - tic
    extra["wall_time_s"] = round(time.perf_counter() - started, 3)
    if skylink_scores is not None and rows:
        extra["skylink_ms_per_query"] = round(1000 * skylink_seconds / len(rows), 2)
        extra["shared_prefix"] = bool(shared_prefix and getattr(model, "supports_shared_prefix", False))
        if feature_cache is not None:
            extra["feature_cache"] = {"hits": feature_cache.hits, "misses": feature_cache.misses}
    if prompt_scores is not None and rows:
        extra["prompt_ms_per_query"] = round(1000 * prompt_seconds / len(rows), 2)
    if model is not None and getattr(model, "config", None) is not None:
        extra["base_model"] = getattr(model.config, "base_model", None)
    if per_query_path is not None:
        write_per_query(per_query_path, per_query_records(rows, skylink_scores, top_k))
        extra["per_query"] = _relative_to_json(Path(per_query_path), json_path)
    report = evaluate_reranking(
        rows,
        skylink_scores,
        top_k,
        prompt_scores_by_query=prompt_scores,
        config=config,
        split=split,
        gallery_protocol=gallery_protocol,
        data=str(data),
        extra=extra,
    )
    if json_path is not None:
        report.to_json(json_path)
    return report


def _relative_to_json(path: Path, json_path: str | Path | None) -> str:
    """``path`` relative to the JSON's folder when it lies under it (the pair can be moved together)."""
    if json_path is not None:
        try:
            return path.resolve().relative_to(Path(json_path).resolve().parent).as_posix()
        except ValueError:
            pass
    return str(path.resolve())


class _adapters_disabled:
    """``PeftModel.disable_adapter()`` when the model has it (the prompt baseline runs on the base LVLM)."""

    def __init__(self, model: Any) -> None:
        self.ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else None

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
