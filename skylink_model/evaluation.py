"""Table-1 evaluation of SkyLink re-ranking (arXiv 2603.08063, Table 1 and appendix A.1), with score fusion.

The retriever row is computed from the dataset's own ``positive_ranks`` and ``retrieved_ids`` columns, so no
retriever (and no re-ranker: ``skyrank eval`` without ``--adapter``) is needed. A re-ranker (SkyLink, or the
listwise prompt baseline of appendix A.8) supplies one score per candidate of each query's top-k; the top-k is
re-ordered by score (ties keep the retriever's order), positives beyond the top-k keep their full-ranking ranks,
and the metrics are recomputed. ``skylink_fused`` re-orders the top-k by ``z(S) + W * z(retriever score)``
(:mod:`skylink_model.fusion`), W fixed or chosen on validation queries carved from the training split
(:func:`choose_weight`; never the test split).

Every metric is defined in :mod:`skyrank.metrics` (one place); this module only orchestrates it.

The JSON (:meth:`EvalReport.to_json`; ``schema_version`` 2), which ``skyrank table`` / reports read::

    {
      "schema_version": 2,
      "config": "sample4geo-university1652-d2s", "split": "test", "top_k": 10, "num_queries": 37855,
      "gallery_size": 951, "top1_percent_k": 11,          # R@top1% = Recall@top1_percent_k (null: unknown gallery)
      "ap": ["market1501", "precision"],                   # the AP definitions reported (--ap)
      "metrics": ["R@1", "R@5", "R@10", "R@top1%", "AP", "AP_topk_market1501", "AP_precision", "AP_conservative"],
      "rows": {                                            # percent; improvement rows in points
        "retriever": {...}, "skylink": {...}, "skylink_fused": {...}, "prompt_baseline": {...},
        "improvement": {...}, "improvement_fused": {...}, "improvement_prompt_baseline": {...}
      },
      "ci95": {"<row>": {"<metric>": [low, high]}},        # percentile bootstrap over queries (improvements paired)
      "metric_definitions": {"AP": "...", ...},            # skyrank.metrics.METRIC_DEFINITIONS
      "tie_rule": "...", "protocol": "...", "gallery_protocol": "official" | null, "data": "...",
      "fusion": null | {"mode": "auto" | "fixed", "weight": 1.5 | null, "formula": "...",
                        "validation": {"num_queries", "fraction", "seed", "split", "objective", "rule",
                                       "by_weight": {...},
                                       "note": "the retriever was trained on these queries"},
                        "reason": "why no fused row (auto without validation queries)"},
      "extra": {"wall_time_s": ..., "base_model": ..., "prompt_unparsable": ...},
      "evaluation_protocol": "vigor" | ... | null,          # the benchmark's evaluator (skyrank.metrics.PROTOCOLS)
      "top1_percent_definition": "floor" | "int+1" | "cmc" | null   # which R@1% the R@top1% column is
    }

Each benchmark is scored by its own evaluator's rules (issue 20): the dataset's manifest names the protocol
(``evaluation_protocol``, else its benchmark name; none: the University-1652 columns above), which picks the R@1%
definition, whether AP is reported, and the extra columns (VIGOR ``Hit_Rate``, DenseUAV ``SDM@1/3/5/10`` and
``MA@5/10/20m``).

Rows present: ``retriever`` always; ``skylink`` / ``improvement`` with a SkyLink model; ``skylink_fused`` /
``improvement_fused`` when a fusion weight is fixed or chosen; the prompt rows with ``baseline="prompt"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skylink_model import fusion
from skyrank import metrics
from skyrank.format import rules

SCHEMA_VERSION = 2

#: Every metric column, in report order; ``--ap`` keeps the AP columns of the chosen definitions.
ALL_METRICS: tuple[str, ...] = (
    "R@1", "R@5", "R@10", "R@top1%", "AP", "AP_topk_market1501", "AP_precision", "AP_conservative",
)  # fmt: skip

#: Default metric columns when the gallery size is unknown (no R@top1%).
METRIC_NAMES: tuple[str, ...] = tuple(m for m in ALL_METRICS if m != "R@top1%")

#: Rows whose per-query values get a bootstrap interval, and the improvement rows (paired differences).
_CI_ROWS = ("retriever", "skylink", "skylink_fused", "prompt_baseline")
_IMPROVEMENTS = {
    "improvement": "skylink",
    "improvement_fused": "skylink_fused",
    "improvement_prompt_baseline": "prompt_baseline",
}

PROTOCOL = (
    "re-rank the retriever's top-k (retrieved_ids[:top_k]) by the re-ranker's (or fused) score, ties broken by "
    "retriever order; the ground truth may be absent from the top-k; R@K and AP from the new 1-based ranks of every "
    "positive, positives beyond the top-k keeping their full-ranking ranks"
)

TIE_RULE = metrics.TIE_RULE

FUSION_FORMULA = "z(S) + W * z(retriever score), per-query z-scores over the top-k (skylink_model.fusion)"

VALIDATION_NOTE = (
    "W is chosen on validation queries carved (by location) from the training split and held out of SkyLink's "
    "training; the retriever was itself trained on these queries, so its validation scores are optimistic and "
    "the chosen W leans towards the retriever"
)


def metric_columns(
    ap: Sequence[str] = metrics.AP_DEFINITIONS,
    *,
    with_top1pct: bool = True,
    protocol: metrics.EvaluationProtocol | None = None,
) -> tuple[str, ...]:
    """The metric columns reported for the AP definitions ``ap`` (``--ap``), in :data:`ALL_METRICS` order.

    With a benchmark's ``protocol`` (:data:`skyrank.metrics.PROTOCOLS`): no AP column when its evaluator reports
    none (VIGOR, CVUSA, CVACT), and its extra metrics (``Hit_Rate``, ``SDM@K``, ``MA@<m>m``) last.
    """
    if protocol is not None and not protocol.ap:
        cols = tuple(m for m in ALL_METRICS if m.startswith("R@") and (with_top1pct or m != "R@top1%"))
        return cols + protocol.extra
    extra = protocol.extra if protocol is not None else ()
    chosen = set()
    for definition in ap:
        if definition not in metrics.AP_COLUMNS:
            raise ValueError(f"AP definition must be one of {', '.join(metrics.AP_DEFINITIONS)}, got {definition!r}")
        chosen.update(metrics.AP_COLUMNS[definition])
    if not chosen:
        raise ValueError("choose at least one AP definition")
    cols = tuple(m for m in ALL_METRICS if (m.startswith("R@") and (with_top1pct or m != "R@top1%")) or m in chosen)
    return cols + tuple(extra)


#: ``(row, ranked_ids, positive_ranks) -> {metric: fraction}``: a protocol's extra per-query metrics.
ExtraMetrics = Any


def _protocol_extras(
    protocol: metrics.EvaluationProtocol | None, lonlat: Mapping[str, Sequence[float]] | None
) -> ExtraMetrics | None:
    """The per-query extra metrics of ``protocol`` (:func:`skyrank.metrics.protocol_query_metrics`), or ``None``."""
    if protocol is None or not protocol.extra:
        return None
    if protocol.needs_coordinates and lonlat is None:
        raise ValueError(f"the {protocol.name} protocol's {', '.join(protocol.extra)} need image coordinates")

    def extras(row: Mapping[str, Any], ranked_ids: Sequence[str], ranks: Sequence[int]) -> dict[str, float]:
        qid = str(row["query_id"])
        return metrics.protocol_query_metrics(
            protocol, ranked_ids=ranked_ids, positive_ranks=ranks,
            semi_positive_ids=[str(s) for s in (row.get("semi_positive_ids") or ())],
            query_lonlat=lonlat.get(qid) if lonlat is not None else None, lonlat=lonlat,
        )  # fmt: skip

    return extras


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


def _retriever_per_query(
    rows: list[Mapping[str, Any]], top_k: int, top1pct_k: int | None, extras: ExtraMetrics | None = None
) -> list[dict[str, float]]:
    out = []
    for row in rows:
        n_top = min(top_k, len(list(row["retrieved_ids"]))) or top_k
        ranks = [int(r) for r in row["positive_ranks"]]
        q = metrics.query_metrics(ranks, n_top, top1pct_k=top1pct_k)
        if extras is not None:
            q.update(extras(row, [str(i) for i in row["retrieved_ids"]], ranks))
        out.append(q)
    return out


def _rerank_per_query(
    rows: list[Mapping[str, Any]],
    scores_by_query: Mapping[str, Mapping[str, float]],
    top_k: int,
    top1pct_k: int | None,
    extras: ExtraMetrics | None = None,
) -> list[dict[str, float]]:
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
        q = metrics.query_metrics(ranks, len(topk_ids), top1pct_k=top1pct_k)
        if extras is not None:  # the full ranking as known: the permuted top-k, then the retriever's order
            q.update(extras(row, topk_ids + [str(i) for i in list(row["retrieved_ids"])[len(topk_ids):]], ranks))
        per_query.append(q)
    return per_query


def rerank_metrics(
    rows: Sequence[Mapping[str, Any]],
    scores_by_query: Mapping[str, Mapping[str, float]],
    top_k: int,
    top1pct_k: int | None = None,
) -> dict[str, float]:
    """Mean metrics (percent, :func:`skyrank.metrics.query_metrics` keys) of the top-k re-ranked by the scores."""
    return metrics.summarize(_rerank_per_query(list(rows), scores_by_query, top_k, top1pct_k))


def choose_weight(
    rows: Sequence[Mapping[str, Any]],
    scores_by_query: Mapping[str, Mapping[str, float]],
    top_k: int,
    grid: Sequence[float] = fusion.WEIGHT_GRID,
    rule: str = fusion.DEFAULT_RULE,
) -> tuple[float, dict[str, dict[str, float]]]:
    """The fusion weight W of ``grid`` chosen on validation queries by :data:`skylink_model.fusion.OBJECTIVE`.

    ``rows``/``scores_by_query`` are validation queries (carved from the training split, never the test split).
    ``rule="best"``: the W with the best mean objective, ties going to the larger W (closer to the retriever).
    ``rule="one-se"`` (default): the one-standard-error rule (Hastie, Tibshirani & Friedman, *The Elements of
    Statistical Learning*, 7.10), with the largest W as the simplest model: the largest W whose mean objective is
    within one standard error of the best W's, the standard error being that of the per-query differences to the
    best W (a paired comparison on the same queries). A gain that a few validation queries cannot tell from noise
    so keeps the retriever's order (W = inf). Returns ``(W, {weight_key(W): {metric: percent}})``.
    """
    if not rows:
        raise ValueError("choose_weight needs at least one validation query")
    if rule not in fusion.RULES:
        raise ValueError(f"unknown fusion rule {rule!r}; choose one of {', '.join(fusion.RULES)}")
    rows = list(rows)
    table: dict[str, dict[str, float]] = {}
    per_weight: list[tuple[float, np.ndarray]] = []
    for w in sorted(float(g) for g in grid):
        fused = fusion.fused_scores_by_query(rows, scores_by_query, top_k, w)
        per_query = _rerank_per_query(rows, fused, top_k, None)
        table[fusion.weight_key(w)] = metrics.summarize(per_query)
        per_weight.append((w, np.array([q[fusion.OBJECTIVE] for q in per_query], dtype=np.float64)))
    best_w, best = max(per_weight, key=lambda wv: (wv[1].mean(), wv[0]))
    if rule == "best":
        return best_w, table
    for w, values in reversed(per_weight):  # largest W first
        diff = best - values
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        if diff.mean() <= se + 1e-12:
            return w, table
    raise AssertionError("unreachable: the best W is within one standard error of itself")


@dataclass
class EvalReport:
    """The rows of Table 1 for one config/split (all metrics in percent); see the module docstring for the JSON."""

    config: str
    split: str
    top_k: int
    num_queries: int
    rows: dict[str, dict[str, float]]
    metrics: list[str] = field(default_factory=lambda: list(METRIC_NAMES))
    ap: list[str] = field(default_factory=lambda: list(metrics.AP_DEFINITIONS))
    gallery_size: int | None = None
    top1_percent_k: int | None = None
    ci95: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    fusion: dict[str, Any] | None = None
    metric_definitions: dict[str, str] = field(default_factory=dict)
    tie_rule: str = TIE_RULE
    protocol: str = PROTOCOL
    gallery_protocol: str | None = None
    data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: the benchmark's evaluator (:data:`skyrank.metrics.PROTOCOLS`; ``None``: a dataset built before issue 20)
    evaluation_protocol: str | None = None
    #: which R@1% convention ``R@top1%`` follows (:data:`skyrank.metrics.TOP1_PERCENT_DEFINITIONS`)
    top1_percent_definition: str | None = None
    #: per-query metric values of each row (fractions), for bootstrap and per-query analysis; not in the JSON
    per_query: dict[str, list[dict[str, float]]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        keys = (
            "schema_version", "config", "split", "top_k", "num_queries", "gallery_size", "top1_percent_k", "ap",
            "metrics", "rows", "ci95", "metric_definitions", "tie_rule", "protocol", "gallery_protocol", "data",
            "fusion", "extra", "evaluation_protocol", "top1_percent_definition",
        )  # fmt: skip
        return json.loads(json.dumps({k: getattr(self, k) for k in keys}))

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        if path is not None:
            write_text_atomic(Path(path), text)
        return text

    def format_table(self) -> str:
        """A console table: one line per row (retriever, re-rankers, improvements) and what each AP means."""
        labels = {
            "retriever": "Retriever",
            "skylink": "+SkyLink",
            "skylink_fused": "+SkyLink fused",
            "prompt_baseline": "+Listwise prompt",
            "improvement": "Improvement",
            "improvement_fused": "Improvement (fused)",
            "improvement_prompt_baseline": "Improvement (prompt)",
        }
        short = {"AP": "AP(M1501)", "AP_topk_market1501": "AP(top-k)", "AP_precision": "AP(prec)",
                 "AP_conservative": "AP(cons)"}  # fmt: skip
        cols = self.metrics
        width = max(len(labels.get(name, name)) for name in self.rows)
        head = f"{'':<{width}}  " + "  ".join(f"{short.get(m, m):>10}" for m in cols)
        lines = [
            f"{self.config} / {self.split}: {self.num_queries} queries, re-ranking the top-{self.top_k}",
            head,
            "-" * len(head),
        ]
        for name, row in self.rows.items():
            signed = name.startswith("improvement")
            cells = "  ".join(f"{row[m]:>+10.2f}" if signed else f"{row[m]:>10.2f}" for m in cols)
            lines.append(f"{labels.get(name, name):<{width}}  {cells}")
        top1pct_rule = {
            "floor": f"Sample4Geo's Recall@top1, {self.gallery_size} // 100",
            "int+1": f"SAFA/VIGOR's int(0.01 x {self.gallery_size}) + 1",
        }.get(self.top1_percent_definition or "cmc", f"evaluators' CMC[round(0.01 x {self.gallery_size})]")
        notes = {
            "R@top1%": f"R@top1% = Recall@{self.top1_percent_k} ({top1pct_rule})",
            "Hit_Rate": "Hit_Rate: VIGOR's hit rate, nothing but the 3 semi-positives ranked above the positive",
            "SDM@1": "SDM@K: DenseUAV's distance-weighted score of the top K (lon/lat degrees, exp(-5000 d))",
            "MA@5m": "MA@m: DenseUAV's share of queries whose top-1 location is closer than m metres (haversine)",
            "AP": "AP(M1501): Market-1501 trapezoid AP over the full ranking (top-k permuted)",
            "AP_topk_market1501": "AP(top-k): trapezoid AP within the re-ranked top-k list",
            "AP_precision": "AP(prec): precision AP over the full ranking (SkyLink Table 1's AP)",
            "AP_conservative": "AP(cons): precision AP, 0 when the top-k holds no positive (SkyLink A.1)",
        }
        lines.extend(text for m, text in notes.items() if m in cols)
        if self.evaluation_protocol:
            known = metrics.PROTOCOLS.get(self.evaluation_protocol)
            source = f" ({known.evaluator})" if known is not None else ""
            lines.append(f"Evaluation protocol: {self.evaluation_protocol}{source}")
        if self.fusion is not None:
            if self.fusion.get("weight") is not None:
                how = "chosen on validation queries" if self.fusion.get("mode") == "auto" else "fixed"
                w = self.fusion["weight"]
                shown = "inf (the retriever's order)" if w == "inf" else f"{float(w):g}"
                lines.append(f"Fused: z(S) + W z(retriever), W = {shown} ({how}).")
            elif self.fusion.get("reason"):
                lines.append(f"No fused row: {self.fusion['reason']}")
        if self.gallery_protocol:
            lines.append(f"Gallery protocol: {self.gallery_protocol}")
        if self.extra.get("metrics_omitted"):
            lines.append(f"Not computed: {self.extra['metrics_omitted']}")
        if "prompt_unparsable" in self.extra:
            n_bad = self.extra["prompt_unparsable"]
            lines.append(f"Listwise prompt: {n_bad} candidate score(s) unparsable (scored 0).")
        return "\n".join(lines)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ci(values: list[float], seed: int) -> list[float]:
    low, high = metrics.bootstrap_ci(values, seed=seed)
    return [round(low, 4), round(high, 4)]


def per_query_records(
    rows: Iterable[Mapping[str, Any]],
    scores_by_query: Mapping[str, Mapping[str, float]] | None,
    top_k: int,
    *,
    fused_scores_by_query: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """One record per query: the retriever's top-k and, with scores, the re-ranker's scores and order.

    Keys: ``query_id``, ``gt_id``, ``positive_ids``, ``positive_ranks`` (retriever, full ranking),
    ``semi_positive_ids`` (only when the row has some: VIGOR),
    ``retrieved_ids``/``retrieved_scores`` (the top-k), and with scores ``scores`` (aligned with
    ``retrieved_ids``), ``reranked_ids`` (:func:`reranked_topk`) and ``reranked_positive_ranks``
    (:func:`skyrank.metrics.rerank_positive_ranks`); with fused scores (the ``skylink_fused`` row) the same as
    ``fused_scores`` / ``fused_ids`` / ``fused_positive_ranks``. The contact sheets and R@K curves of
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
        if row.get("semi_positive_ids"):  # VIGOR: framed apart on the contact sheets
            rec["semi_positive_ids"] = [str(s) for s in row["semi_positive_ids"]]
        for by_query, (scores_key, ids_key, ranks_key) in (
            (scores_by_query, ("scores", "reranked_ids", "reranked_positive_ranks")),
            (fused_scores_by_query, ("fused_scores", "fused_ids", "fused_positive_ranks")),
        ):
            if by_query is None:
                continue
            scores = by_query[qid]
            order = reranked_topk(top, scores, top_k)
            rec[scores_key] = [float(scores[c]) for c in top]
            rec[ids_key] = order
            pos, ranks = rec["positive_ids"], rec["positive_ranks"]
            rec[ranks_key] = metrics.rerank_positive_ranks(order, pos, ranks, len(order))
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
    fusion_weight: float | None = None,
    fusion_info: dict[str, Any] | None = None,
    ap: Sequence[str] = metrics.AP_DEFINITIONS,
    gallery_size: int | None = None,
    config: str = "",
    split: str = "",
    gallery_protocol: str | None = None,
    data: str | None = None,
    extra: dict[str, Any] | None = None,
    bootstrap_seed: int = 0,
    protocol: str | metrics.EvaluationProtocol | None = None,
    lonlat: Mapping[str, Sequence[float]] | None = None,
) -> EvalReport:
    """Table 1 for SkyRank retriever rows and re-ranker scores.

    Args:
        rows: SkyRank retriever rows (``query_id``, ``positive_ids``, ``positive_ranks``, ``retrieved_ids``, and
            ``retrieved_scores`` for fusion); a ``datasets.Dataset`` works.
        scores_by_query: ``{query_id: {candidate_id: score}}`` covering each query's top-k (SkyLink's S); ``None``
            gives the retriever row only (plus the prompt baseline if given).
        top_k: how many of the retriever's candidates are re-ranked (the paper: 10).
        prompt_scores_by_query: the same for the listwise prompt baseline (appendix A.8).
        fusion_weight: W of the ``skylink_fused`` row (needs ``scores_by_query``); ``fusion_info`` is recorded
            as the JSON's ``fusion`` (how W was chosen).
        ap: the AP definitions to report (``"market1501"``, ``"precision"``; default both).
        gallery_size: the number of gallery images, for R@top1% (omitted when ``None``).
        protocol: the benchmark's evaluator (a name of :data:`skyrank.metrics.PROTOCOLS`): its R@1% definition,
            AP or not, and its extra metrics (VIGOR ``Hit_Rate`` from the rows' ``semi_positive_ids``, DenseUAV
            ``SDM@K`` and ``MA@<m>m`` from ``lonlat``); ``None`` keeps the University-1652 columns and CMC R@1%.
        lonlat: image id -> ``(longitude, latitude)`` of every query and gallery image (DenseUAV's SDM@K and MA@m).

    Returns:
        An :class:`EvalReport` with rows ``retriever``, ``skylink`` and ``improvement`` (skylink − retriever, in
        points), ``skylink_fused`` / ``improvement_fused`` with a fusion weight, and ``prompt_baseline`` /
        ``improvement_prompt_baseline`` when prompt scores are given; bootstrap intervals in ``ci95``.
    """
    if top_k < 1:
        raise ValueError(f"`top_k` must be ≥ 1, got {top_k}")
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to evaluate")
    if isinstance(protocol, str):
        protocol = metrics.get_protocol(protocol)
    top1pct_def = protocol.top1_percent if protocol is not None else "cmc"
    top1pct_k = metrics.top1_percent_k_for(gallery_size, top1pct_def) if gallery_size is not None else None
    cols = metric_columns(ap, with_top1pct=top1pct_k is not None, protocol=protocol)
    if protocol is not None:  # SDM@K needs K retrieved ids per query
        shortest = min(len(list(r["retrieved_ids"])) for r in rows)
        cols = tuple(m for m in cols if not m.startswith("SDM@") or int(m[4:]) <= shortest)
    if protocol is not None:
        protocol = dataclasses.replace(protocol, extra=tuple(m for m in protocol.extra if m in cols))
    extras = _protocol_extras(protocol, lonlat)
    per_query: dict[str, list[dict[str, float]]] = {
        "retriever": _retriever_per_query(rows, top_k, top1pct_k, extras)
    }
    if scores_by_query is not None:
        per_query["skylink"] = _rerank_per_query(rows, scores_by_query, top_k, top1pct_k, extras)
        if fusion_weight is not None:
            fused = fusion.fused_scores_by_query(rows, scores_by_query, top_k, fusion_weight)
            per_query["skylink_fused"] = _rerank_per_query(rows, fused, top_k, top1pct_k, extras)
    elif fusion_weight is not None:
        raise ValueError("fusion needs re-ranker scores (scores_by_query)")
    if prompt_scores_by_query is not None:
        per_query["prompt_baseline"] = _rerank_per_query(rows, prompt_scores_by_query, top_k, top1pct_k, extras)

    table: dict[str, dict[str, float]] = {}
    ci95: dict[str, dict[str, list[float]]] = {}
    for name, values in per_query.items():
        summary = metrics.summarize(values)
        table[name] = {m: summary[m] for m in cols}
        if name in _CI_ROWS:
            ci95[name] = {m: _ci([q[m] for q in values], bootstrap_seed) for m in cols}
    base = per_query["retriever"]
    for name, source in _IMPROVEMENTS.items():
        if source in per_query:
            table[name] = {m: table[source][m] - table["retriever"][m] for m in cols}
            diffs = {m: [a[m] - b[m] for a, b in zip(per_query[source], base, strict=True)] for m in cols}
            ci95[name] = {m: _ci(diffs[m], bootstrap_seed) for m in cols}
    fusion_record = dict(fusion_info) if fusion_info is not None else None
    if fusion_weight is not None:
        fusion_record = {
            "mode": "fixed", "formula": FUSION_FORMULA, **(fusion_record or {}),
            "weight": fusion.weight_json(fusion_weight),
        }  # fmt: skip
    return EvalReport(
        config=config,
        split=split,
        top_k=top_k,
        num_queries=len(rows),
        rows=table,
        metrics=list(cols),
        ap=list(ap),
        gallery_size=gallery_size,
        top1_percent_k=top1pct_k,
        ci95=ci95,
        fusion=fusion_record,
        metric_definitions=_definitions(cols, protocol),
        gallery_protocol=gallery_protocol,
        data=data,
        extra=dict(extra or {}),
        per_query=per_query,
        evaluation_protocol=protocol.name if protocol is not None else None,
        top1_percent_definition=top1pct_def if top1pct_k is not None else None,
    )


def _definitions(cols: Sequence[str], protocol: metrics.EvaluationProtocol | None) -> dict[str, str]:
    """What each reported column means (the JSON's ``metric_definitions``); R@top1% names its convention."""
    out = {m: metrics.METRIC_DEFINITIONS["R@K" if m in ("R@1", "R@5", "R@10") else m] for m in cols}
    if protocol is not None and "R@top1%" in out:
        out["R@top1%"] = f"{protocol.top1_percent}: {metrics.TOP1_PERCENT_DEFINITIONS[protocol.top1_percent]}"
    return out


def _score_queries(
    model: Any,
    rows: Sequence[Mapping[str, Any]],
    images: Any,
    top_k: int,
    batch_size: int,
    progress: bool,
    desc: str,
    *,
    shared_prefix: bool = True,
    feature_cache_mb: float = 1024.0,
    stats: dict[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """SkyLink's S for each row's top-k (query features once per query; gallery pixels / features cached).

    ``stats`` (when given) receives ``seconds`` (scoring time, image loading excluded) and the feature cache's
    ``hits``/``misses``.
    """
    from skylink_model.rerank import FeatureCache, PixelCache, rerank_query

    if feature_cache_mb < 0:
        raise ValueError(f"`feature_cache_mb` must be ≥ 0, got {feature_cache_mb}")
    pixel_cache = PixelCache() if getattr(model, "supports_shared_vision", False) else None
    use_features = shared_prefix and feature_cache_mb > 0 and getattr(model, "supports_shared_prefix", False)
    feature_cache = FeatureCache(int(feature_cache_mb * 2**20)) if use_features else None
    iterator: Iterable[Mapping[str, Any]] = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=desc, unit="query")
    out: dict[str, dict[str, float]] = {}
    seconds = 0.0
    for row in iterator:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        query_image, candidate_images = images(qid), images.many(top)
        tic = time.perf_counter()
        scores = rerank_query(
            model, query_image, candidate_images, batch_size=batch_size, candidate_keys=top, cache=pixel_cache,
            shared_prefix=shared_prefix, feature_cache=feature_cache,
        )  # fmt: skip
        seconds += time.perf_counter() - tic
        out[qid] = dict(zip(top, scores.tolist(), strict=True))
    if stats is not None:
        stats["seconds"] = seconds
        if feature_cache is not None:
            stats["feature_cache"] = {"hits": feature_cache.hits, "misses": feature_cache.misses}
    return out


def parse_fuse(value: str | float | None) -> str | float:
    """``"auto"``, ``"none"`` or a weight W >= 0 (``--fuse``); ``ValueError`` otherwise."""
    if value is None:
        return "none"
    if isinstance(value, str) and value.strip().lower() in ("auto", "none"):
        return value.strip().lower()
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--fuse must be 'auto', 'none' or a weight >= 0, got {value!r}") from None
    if not weight >= 0 or weight == float("inf"):
        raise ValueError(f"--fuse must be 'auto', 'none' or a finite weight >= 0, got {value!r}")
    return weight


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
    ap: Sequence[str] = metrics.AP_DEFINITIONS,
    fuse: str | float | None = "auto",
    validation: Mapping[str, Any] | None = None,
) -> EvalReport:
    """Evaluate the retriever, a SkyLink model and/or the listwise prompt baseline on one SkyRank split.

    Loads the split with :func:`skylink_model.data.load_skyrank_split`, re-ranks every query's top-k with
    :func:`skylink_model.rerank.rerank_query` (query vision features computed once per query), and builds the
    report with :func:`evaluate_reranking`. With ``model=None`` and no baseline only the retriever row is reported.

    Args:
        model: a :class:`~skylink_model.model.SkyLinkModel`, or ``None`` for no SkyLink row.
        baseline: ``"prompt"`` to add the listwise prompt baseline (appendix A.8). Its LVLM is
            ``baseline_model``/``baseline_processor`` (a ``...ForConditionalGeneration`` and its processor); when
            not given, the base model of ``model`` is used with its LoRA adapters disabled.
        max_queries: evaluate only the first N queries (sorted by id, as stored).
        gallery_protocol: recorded in the JSON; by default the one the dataset was built with (its manifest's
            ``protocol``: ``official`` or ``query-ids-only``), ``None`` when the dataset records none.
        json_path: also write the report's JSON there (atomically).
        per_query_path: also write SkyLink's per-query scores and orders there (JSON Lines,
            :func:`per_query_records`); the report's ``extra["per_query"]`` names the file (relative to the JSON's
            folder when it lies beside it). ``skyrank show`` and ``skyrank sweep`` read it.
        shared_prefix: score each query's candidates on one shared prefix (:mod:`skylink_model.prefix`; default);
            ``False`` scores every pair in full (the naive path).
        feature_cache_mb: memory bound of the gallery vision-feature cache (LRU,
            :class:`~skylink_model.rerank.FeatureCache`) used with ``shared_prefix``; 0 turns it off. The model is
            frozen here, so cached features stay valid.
        ap: AP definitions to report (``--ap``; default both, named columns).
        fuse: ``"auto"`` (W chosen on ``validation``), ``"none"``, or a fixed weight W (``--fuse``).
        validation: the run's validation record (:func:`skylink_model.data.read_validation`: ``data``,
            ``data_config``, ``split``, ``query_ids``, ``fraction``, ``seed``); ``None`` with ``fuse="auto"``
            reports no fused row and says why.

    ``extra`` records ``skylink_ms_per_query`` (re-ranking time per query, image loading excluded) and the cache's
    hits and misses; ``prompt_ms_per_query`` likewise for the baseline.
    """
    from skylink_model.data import load_skyrank_split
    from skyrank.errors import SkyRankError
    from skyrank.loading import build_params

    if baseline not in (None, "prompt"):
        raise ValueError(f"`baseline` must be None or 'prompt', got {baseline!r}")
    fuse = parse_fuse(fuse)
    started = time.perf_counter()
    split_data = load_skyrank_split(data, config, split, images_root=images_root, cache_dir=cache_dir)
    params = build_params(data, cache_dir=cache_dir)
    if gallery_protocol is None:  # what the build used (`skyrank build --protocol`), from the dataset's manifest
        gallery_protocol = params.get("protocol")
    # The benchmark's own evaluator: the manifest's evaluation_protocol, else its benchmark name, else none.
    protocol = metrics.resolve_protocol(params)
    recorded = params.get("evaluation_protocol")
    if recorded and (protocol is None or protocol.name != recorded):  # e.g. "synthetic": no evaluator of its own
        extra_note = {"evaluation_protocol_recorded": str(recorded)}
    else:
        extra_note = {}
    lonlat = None
    if protocol is not None and protocol.needs_coordinates:
        try:
            lonlat = image_lonlat(data, config, split, cache_dir=cache_dir)
        except SkyRankError as err:  # no coordinates stored: the other metrics still stand, and the JSON says why
            extra_note["metrics_omitted"] = f"{', '.join(protocol.extra)}: {err}"
            protocol = dataclasses.replace(protocol, extra=())
    rows_ds = split_data.rows
    if max_queries is not None:
        rows_ds = rows_ds.select(range(min(max_queries, len(rows_ds))))
    rows = [dict(r) for r in rows_ds]
    images = split_data.images

    skylink_scores: dict[str, dict[str, float]] | None = None
    prompt_scores: dict[str, dict[str, float]] | None = None
    extra: dict[str, Any] = dict(extra_note)
    score_stats: dict[str, Any] = {}
    if model is not None:
        skylink_scores = _score_queries(
            model, rows, images, top_k, batch_size, progress, f"re-ranking {config}/{split}",
            shared_prefix=shared_prefix, feature_cache_mb=feature_cache_mb, stats=score_stats,
        )  # fmt: skip
    if baseline == "prompt":
        views = None  # the direction's drone/satellite words, unless the data says otherwise (street views)
        if split_data.query_view and split_data.gallery_view:
            from skylink_model.config import view_phrase

            panorama = split_data.ground_is_panorama()
            views = (view_phrase(split_data.query_view, panorama=panorama), view_phrase(split_data.gallery_view))
        prompt_scores = score_prompt_baseline(
            model, rows, images, config, split, top_k, baseline_model, baseline_processor, max_new_tokens,
            progress, extra, views=views,
        )  # fmt: skip
    fusion_weight, fusion_info = fusion_weight_for(
        model, fuse, validation, top_k, batch_size, progress, images_root=images_root, cache_dir=cache_dir,
        test_config=config, test_split=split, test_data=str(data), shared_prefix=shared_prefix,
        feature_cache_mb=feature_cache_mb,
    )  # fmt: skip
    extra["wall_time_s"] = round(time.perf_counter() - started, 3)
    if skylink_scores is not None and rows:
        extra["skylink_ms_per_query"] = round(1000 * score_stats.get("seconds", 0.0) / len(rows), 2)
        extra["shared_prefix"] = bool(shared_prefix and getattr(model, "supports_shared_prefix", False))
        if "feature_cache" in score_stats:
            extra["feature_cache"] = score_stats["feature_cache"]
    if model is not None and getattr(model, "config", None) is not None:
        extra["base_model"] = getattr(model.config, "base_model", None)
    if per_query_path is not None:
        fused_scores = None
        if fusion_weight is not None and skylink_scores is not None:
            fused_scores = fusion.fused_scores_by_query(rows, skylink_scores, top_k, fusion_weight)
        write_per_query(
            per_query_path, per_query_records(rows, skylink_scores, top_k, fused_scores_by_query=fused_scores)
        )
        extra["per_query"] = _relative_to_json(Path(per_query_path), json_path)
    report = evaluate_reranking(
        rows,
        skylink_scores,
        top_k,
        prompt_scores_by_query=prompt_scores,
        fusion_weight=fusion_weight,
        fusion_info=fusion_info,
        ap=ap,
        gallery_size=split_data.gallery_size,
        config=config,
        split=split,
        gallery_protocol=gallery_protocol,
        data=str(data),
        extra=extra,
        protocol=protocol,
        lonlat=lonlat,
    )
    if json_path is not None:
        report.to_json(json_path)
    return report


def score_prompt_baseline(
    model: Any, rows: list[dict], images: Any, config: str, split: str, top_k: int, baseline_model: Any,
    baseline_processor: Any, max_new_tokens: int | None, progress: bool, extra: dict[str, Any],
    views: tuple[str, str] | None = None,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The listwise prompt baseline's scores (appendix A.8): one prompt per query with its top-k, with the LVLM's
    LoRA adapters disabled (``baseline_model`` defaults to SkyLink's base model). Records ``prompt_unparsable`` and
    ``prompt_ms_per_query`` in ``extra``. ``views``: the query and candidate view words of the prompt (street views),
    ``None`` for the direction's drone/satellite."""
    from skylink_model.data import parse_retriever_config
    from skylink_model.prompt_baseline import score_listwise

    prompt_scores: dict[str, dict[str, float]] = {}
    extra["prompt_unparsable"] = 0
    if baseline_model is None or baseline_processor is None:
        if model is None:
            raise ValueError("baseline='prompt' needs baseline_model and baseline_processor (or a SkyLink model)")
        baseline_model = model.backbone
        baseline_processor = model.processor
    direction = parse_retriever_config(config).direction or "d2s"
    iterator: Iterable[dict] = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=f"listwise prompt {config}/{split}", unit="query")
    prompt_seconds = 0.0
    for row in iterator:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        query_image, candidate_images = images(qid), images.many(top)
        tic = time.perf_counter()
        with _adapters_disabled(baseline_model):
            result = score_listwise(
                baseline_model, baseline_processor, query_image, candidate_images, max_new_tokens,
                direction=direction, views=views,
            )  # fmt: skip
        prompt_seconds += time.perf_counter() - tic
        prompt_scores[qid] = dict(zip(top, result.scores, strict=True))
        extra["prompt_unparsable"] += result.n_unparsable
    if rows:
        extra["prompt_ms_per_query"] = round(1000 * prompt_seconds / len(rows), 2)
    return prompt_scores


def fusion_weight_for(
    model: Any, fuse: str | float, validation: Mapping[str, Any] | None, top_k: int, batch_size: int,
    progress: bool, **auto_kwargs: Any,
) -> tuple[float | None, dict[str, Any] | None]:  # fmt: skip
    """The fusion weight W and its record: chosen on the run's validation queries (``fuse="auto"``,
    :func:`_auto_weight`), fixed, or none (no SkyLink model, or ``fuse="none"``)."""
    if model is None or fuse == "none":
        return None, None
    if fuse == "auto":
        return _auto_weight(model, validation, top_k, batch_size, progress, **auto_kwargs)
    return float(fuse), {"mode": "fixed", "formula": FUSION_FORMULA}


def image_lonlat(
    data: str | Path, config: str, split: str, *, cache_dir: str | Path | None = None
) -> dict[str, tuple[float, float]]:
    """Image id -> ``(longitude, latitude)`` of the config's gallery and queries images (their ``longitude`` /
    ``latitude`` columns; DenseUAV's SDM@K). Raises :class:`~skyrank.errors.SkyRankError` naming the config when
    the columns are missing or a coordinate is unknown (null)."""
    from skylink_model.data import parse_retriever_config
    from skyrank.errors import SkyRankError
    from skyrank.loading import read_columns

    parsed = parse_retriever_config(config)
    out: dict[str, tuple[float, float]] = {}
    for image_config in (parsed.gallery_config, parsed.queries_config):
        table = read_columns(data, image_config, split, ["image_id", "longitude", "latitude"], cache_dir=cache_dir)
        if not {"longitude", "latitude"} <= set(table.column_names):
            raise SkyRankError(
                f"{data}:{image_config}/{split} has no longitude/latitude columns, which SDM@K needs; rebuild the "
                "dataset with this version of skyrank build"
            )
        for image_id, lon, lat in zip(table["image_id"], table["longitude"], table["latitude"], strict=True):
            if lon is None or lat is None:
                raise SkyRankError(f"{data}:{image_config}/{split}: image {image_id!r} has no coordinates (SDM@K)")
            out[str(image_id)] = (float(lon), float(lat))
    return out


def _auto_weight(
    model: Any,
    validation: Mapping[str, Any] | None,
    top_k: int,
    batch_size: int,
    progress: bool,
    *,
    images_root: str | Path | None,
    cache_dir: str | Path | None,
    test_config: str,
    test_split: str,
    test_data: str,
    shared_prefix: bool = True,
    feature_cache_mb: float = 1024.0,
) -> tuple[float | None, dict[str, Any]]:
    """W chosen on the run's validation queries (:func:`choose_weight`), or ``None`` and the reason."""
    from skylink_model.data import load_skyrank_split

    info: dict[str, Any] = {"mode": "auto", "formula": FUSION_FORMULA, "weight": None}
    if validation is None or not validation.get("query_ids"):
        info["reason"] = (
            "the SkyLink run holds no validation queries (train with --val-fraction, or pass --fuse W / --fuse none)"
        )
        return None, info
    val_data = str(validation.get("data") or test_data)
    if not Path(val_data).exists() and Path(test_data).exists():
        val_data = test_data  # the run was trained on a copy elsewhere: the same dataset under --data
    val_config = str(validation.get("data_config") or test_config)
    val_split = str(validation.get("split", "train"))
    if val_config == test_config and val_split == test_split:
        raise ValueError(f"validation queries come from {val_config}/{val_split}, the split being evaluated")
    wanted = {str(q) for q in validation["query_ids"]}
    split_data = load_skyrank_split(val_data, val_config, val_split, images_root=images_root, cache_dir=cache_dir)
    ids = [str(q) for q in split_data.rows["query_id"]]
    index = [i for i, q in enumerate(ids) if q in wanted]
    if len(index) != len(wanted):
        raise ValueError(
            f"{len(wanted) - len(index)} of the run's {len(wanted)} validation queries are not in "
            f"{val_data}:{val_config}/{val_split}; is --data the dataset the run was trained on?"
        )
    rows = [dict(r) for r in split_data.rows.select(index)]
    scores = _score_queries(
        model, rows, split_data.images, top_k, batch_size, progress, "validation (fusion W)",
        shared_prefix=shared_prefix, feature_cache_mb=feature_cache_mb,
    )  # fmt: skip
    weight, by_weight = choose_weight(rows, scores, top_k)
    info["weight"] = weight
    info["validation"] = {
        "data": val_data,
        "data_config": val_config,
        "split": val_split,
        "num_queries": len(rows),
        "fraction": validation.get("fraction"),
        "seed": validation.get("seed"),
        "grid": [fusion.weight_json(w) for w in fusion.WEIGHT_GRID],
        "objective": fusion.OBJECTIVE,
        "rule": fusion.DEFAULT_RULE,
        "by_weight": {w: {m: round(v, 4) for m, v in row.items()} for w, row in by_weight.items()},
        "note": VALIDATION_NOTE,
    }
    return weight, info


def _relative_to_json(path: Path, json_path: str | Path | None) -> str:
    """``path`` relative to the JSON's folder when it lies under it (the pair can be moved together)."""
    if json_path is not None:
        try:
            return path.resolve().relative_to(Path(json_path).resolve().parent).as_posix()
        except ValueError:
            pass
    return str(path.resolve())


def local_run(adapter: str | Path) -> Path:
    """A SkyLink run folder on disk: ``adapter`` itself, or its Hub snapshot."""
    if Path(adapter).is_dir():
        return Path(adapter)
    from huggingface_hub import snapshot_download

    from skyrank.hub import download_errors

    with download_errors(repo_id=str(adapter), repo_type="model"):
        return Path(snapshot_download(str(adapter)))


def evaluate_run(
    adapter: str | Path | None,
    data: str | Path,
    config: str,
    *,
    device: str = "cpu",
    ap: Sequence[str] | None = None,
    fuse: str | float | None = "auto",
    **kwargs: Any,
) -> EvalReport:
    """``skyrank eval``: load the SkyLink run (if any) and its validation record, then :func:`evaluate`.

    Without ``adapter`` only the retriever row is reported. Bad options raise
    :class:`~skyrank.errors.SkyRankError` with the fix in the message.
    """
    from skylink_model.data import read_validation
    from skyrank.errors import SkyRankError

    try:
        fuse = parse_fuse(fuse)
    except ValueError as err:
        raise SkyRankError(str(err)) from None
    model = None
    validation = None
    if adapter:
        from skylink_model.model import SkyLinkModel

        run = local_run(adapter)
        model = SkyLinkModel.from_pretrained(run, device=device)
        validation = read_validation(run)
    elif kwargs.get("baseline"):
        raise SkyRankError("--baseline prompt scores with the run's base LVLM: pass --adapter with a SkyLink run")
    return evaluate(
        model, data, config, ap=tuple(ap) if ap else metrics.AP_DEFINITIONS, fuse=fuse, validation=validation,
        **kwargs,
    )  # fmt: skip


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
