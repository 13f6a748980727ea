"""Figures: the ablation curves of a sweep (SkyLink Figure 2 / 3a) and the R@K curve of an evaluation.

matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch), PNGs written
atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skylink_model.report._io import write_atomic
from skyrank import metrics as retrieval_metrics

PARAM_LABELS = {
    "top_k": "re-ranked top-k",
    "k": "|G_z| (candidates per training group, Eq. 3)",
    "threshold": "soft-label threshold T (Eq. 7)",
    "labels": "labels (Eq. 7 ablation)",
    "train_fraction": "fraction of training queries",
    "base_model": "backbone",
}


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))


def recall_curve(records: Sequence[Mapping[str, Any]], max_k: int | None = None) -> dict[str, list[float]]:
    """R@K for K = 1..top-k (percent) of the retriever and, when the records hold scores, of the re-ranked order
    (``reranked``) and of the fused order (``fused``).

    ``records`` are :func:`skylink_model.evaluation.per_query_records`; recall per query is
    :func:`skyrank.metrics.recall_at_k` on the positives' ranks before / after re-ranking.
    """
    if not records:
        raise ValueError("no per-query records")
    top_k = max_k or max(len(r["retrieved_ids"]) for r in records)
    ks = list(range(1, top_k + 1))
    out: dict[str, list[float]] = {"K": [float(k) for k in ks]}
    out["retriever"] = [
        100.0 * sum(retrieval_metrics.recall_at_k(r["positive_ranks"], k) for r in records) / len(records) for k in ks
    ]
    for name, key in (("reranked", "reranked_positive_ranks"), ("fused", "fused_positive_ranks")):
        if all(key in r for r in records):
            out[name] = [
                100.0 * sum(retrieval_metrics.recall_at_k(r[key], k) for r in records) / len(records) for k in ks
            ]
    return out


def plot_recall_curve(curve: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """Retriever vs re-ranked R@K, K = 1..top-k (the two meet at K = top-k: re-ranking permutes only the top-k)."""
    fig = _figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ks = [int(k) for k in curve["K"]]
    ax.plot(ks, curve["retriever"], "o--", color="tab:gray", label="retriever")
    if "reranked" in curve:
        ax.plot(ks, curve["reranked"], "o-", color="tab:blue", label="+SkyLink (re-ranked)")
    if "fused" in curve:
        ax.plot(ks, curve["fused"], "^-", color="tab:green", label="+SkyLink fused")
    ax.set_xlabel("K")
    ax.set_ylabel("R@K (%)")
    ax.set_xticks(ks)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _is_numeric(values: Sequence[Any]) -> bool:
    try:
        [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    return True


def plot_sweep(
    param: str,
    points: Sequence[tuple[Any, Mapping[str, Mapping[str, float]]]],
    path: str | Path,
    metrics: Sequence[str] = ("R@1", "AP"),
    title: str = "",
) -> Path:
    """One panel per metric: +SkyLink (solid) and the retriever (dashed) against the swept value.

    ``points`` are ``(value, EvalReport.rows)`` pairs. Numeric values give lines (SkyLink Figure 2 / 3a);
    names (labels, backbones) give grouped bars. A metric a point lacks is left out of that point.
    """
    if not points:
        raise ValueError("no sweep point to plot")
    values = [v for v, _ in points]
    numeric = _is_numeric(values)
    fig = _figure(4.2 * len(metrics), 3.6)
    for i, metric in enumerate(metrics, start=1):
        ax = fig.add_subplot(1, len(metrics), i)
        top = 0.0
        for row, style, color, label in (("skylink", "o-", "tab:blue", "+SkyLink"),
                                         ("retriever", "s--", "tab:gray", "retriever")):  # fmt: skip
            xs, ys = [], []
            for j, (value, rows) in enumerate(points):
                y = (rows.get(row) or {}).get(metric)
                if isinstance(y, (int, float)):
                    xs.append(float(value) if numeric else j)
                    ys.append(float(y))
            if not xs:
                continue
            top = max(top, *ys)
            if numeric:
                ax.plot(xs, ys, style, color=color, label=label)
            else:
                offset = -0.2 if row == "skylink" else 0.2
                ax.bar([x + offset for x in xs], ys, width=0.38, color=color, label=label)
        if numeric:
            ax.set_xticks([float(v) for v in values])
            ax.set_xticklabels([str(v) for v in values])
        else:
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels([Path(str(v)).name or str(v) for v in values], rotation=15)
            ax.set_ylim(0, max(top, 1.0) * 1.25)  # room for the legend above the bars
        ax.set_xlabel(PARAM_LABELS.get(param, param))
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        if top > 0 or ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {metric} in these evaluations", ha="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
