"""``skyrank bench``: every chosen re-ranker over every chosen SkyRank config, on one leaderboard.

Each (config, re-ranker) pair is one *row*: the re-ranker re-orders each query's retriever top-k
(:mod:`skylink_model.rerankers`), :func:`skylink_model.evaluation.evaluate_reranking` computes the metrics and their
95% bootstrap intervals (every metric is :mod:`skyrank.metrics`'s; none is re-implemented here), and the re-ranker's
cost per query is recorded beside them: LVLM calls, language-model tokens and milliseconds on this device.

A row is written, atomically, to ``<out>/rows/<config>/<row>.json`` as soon as it is done, so an interrupted bench
continues where it stopped (a row file of other settings is refused unless ``overwrite``). The leaderboard is
assembled from the row files: ``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.png`` (R@1 with its
interval, and R@1 against milliseconds per query).

Re-rankers are named ``[ROW=]KIND[:ARG]``:

* ``retriever``: the retriever's own order (no re-ranking, no cost beyond the retrieval the dataset holds);
* ``skylink:RUN``: a trained SkyLink run folder; ``fused:RUN``: its scores fused with the retriever's
  (:mod:`skylink_model.fusion`), W chosen on the run's validation queries (the one-standard-error rule);
* ``listwise:MODEL``, ``pointwise:MODEL``, ``pairwise:MODEL``, ``pairwise-bubble:MODEL``: zero-shot baselines on a
  base LVLM (a Hub id or folder; a SkyLink run folder means its base model).

A zero-shot row on a model under :data:`TINY_PARAMETERS` parameters (the random tiny test and demo backbones) is
flagged: it measures cost, not quality. ``row_queries`` caps single rows at their first N queries (such a row's metrics
and its paired difference to the retriever are over those queries; the table says how many), so a costly row that
only needs to show its cost does not run over the whole test split.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skylink_model.report._io import write_text_atomic
from skyrank.errors import OptionError, OutputExistsError

SCHEMA_VERSION = 1

#: Metric columns of the leaderboard (the eval JSON's names; both AP definitions).
METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "AP", "AP_precision")

#: Re-ranker kinds ``skyrank bench --reranker`` accepts (``retriever`` and ``fused`` are rows of the bench itself).
KINDS: tuple[str, ...] = ("retriever", "skylink", "fused", "listwise", "pointwise", "pairwise", "pairwise-bubble")

#: A zero-shot row on a model with fewer parameters than this measures cost, not quality (a random tiny backbone).
TINY_PARAMETERS = 10_000_000

COST_NOTE = "zero-shot on a tiny model (random weights in the tests and the demo)"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class RerankerSpec:
    """One leaderboard row's re-ranker: its row name, kind (:data:`KINDS`) and argument (run folder or model)."""

    name: str
    kind: str
    arg: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "arg": self.arg}


def parse_reranker(text: str) -> RerankerSpec:
    """``[ROW=]KIND[:ARG]`` → :class:`RerankerSpec`; :class:`OptionError` naming ``--reranker`` when malformed."""
    raw = text.strip()
    name = None
    if "=" in raw.split(":", 1)[0]:
        name, raw = raw.split("=", 1)
    kind, _, arg = raw.partition(":")
    kind, arg = kind.strip(), (arg.strip() or None)
    if kind not in KINDS:
        raise OptionError(f"--reranker {text!r}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "retriever" and arg is not None:
        raise OptionError(f"--reranker {text!r}: the retriever row takes no argument")
    if kind != "retriever" and arg is None:
        what = "a SkyLink run folder" if kind in ("skylink", "fused") else "a base LVLM (Hub id, folder or run)"
        raise OptionError(f"--reranker {text!r}: {kind} needs {what}, e.g. {kind}:runs/skylink")
    name = (name or ("skylink+fused" if kind == "fused" else kind)).strip()
    if not _NAME_RE.match(name):
        raise OptionError(f"--reranker {text!r}: row name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    return RerankerSpec(name, kind, arg)


@dataclass
class BenchResult:
    """The leaderboard's files and its rows (config → list of row records, without per-query scores)."""

    out: Path
    json_path: Path
    markdown_path: Path
    plot_path: Path
    rows: dict[str, list[dict[str, Any]]]
    markdown: str


def device_label(device: str) -> str:
    """The device the costs were measured on, in words (GPU name, or CPU with torch's thread count)."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _parameters(model: Any) -> int | None:
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except AttributeError:
        return None


def _base_model_of(arg: str) -> str:
    """A zero-shot re-ranker's model: ``arg`` itself, or the base model of a SkyLink run folder."""
    config = Path(arg) / "skylink_config.json"
    if config.is_file():
        return str(json.loads(config.read_text(encoding="utf-8"))["base_model"])
    return arg


def build_reranker(spec: RerankerSpec, *, device: str = "cpu", batch_size: int = 16) -> Any:
    """The :class:`~skylink_model.rerankers.Reranker` of a spec (``None`` for the retriever row)."""
    from skylink_model.rerankers import create_reranker

    if spec.kind == "retriever":
        return None
    if spec.kind in ("skylink", "fused"):
        if not (Path(str(spec.arg)) / "value_head.safetensors").is_file():
            raise OptionError(
                f"--reranker {spec.kind}:{spec.arg}: not a SkyLink run folder (no value_head.safetensors)"
            )
        return create_reranker("skylink", run=spec.arg, device=device, batch_size=batch_size)
    if spec.kind == "listwise":
        return create_reranker("listwise", base_model=_base_model_of(str(spec.arg)), device=device)
    return create_reranker(spec.kind, base_model=_base_model_of(str(spec.arg)), device=device, batch_size=batch_size)


def _row_path(out: Path, config: str, name: str) -> Path:
    return out / "rows" / config / f"{name}.json"


def _settings(spec: RerankerSpec, *, data: str, config: str, split: str, top_k: int,
              max_queries: int | None) -> dict[str, Any]:  # fmt: skip
    """What a row file must match to be reused (resuming never mixes settings)."""
    return {"reranker": spec.to_dict(), "data": data, "config": config, "split": split, "top_k": top_k,
            "max_queries": max_queries}  # fmt: skip


def _score_rows(
    reranker: Any, rows: list[dict[str, Any]], images: Any, top_k: int, direction: str, progress: bool, desc: str
) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, Any]]:
    """Scores ``{query_id: {candidate: score}}`` of every row's top-k, the summed cost and summed extras."""
    from skylink_model.rerankers import Cost

    iterator: Any = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=desc, unit="query")
    total = Cost()
    extra: dict[str, Any] = {}
    scores: dict[str, dict[str, float]] = {}
    for row in iterator:
        qid = str(row["query_id"])
        top = [str(i) for i in list(row["retrieved_ids"])[:top_k]]
        query_image, candidate_images = images(qid), images.many(top)
        out = reranker.score(query_image, candidate_images, direction=direction, candidate_keys=top)
        scores[qid] = dict(zip(top, out.scores, strict=True))
        total = total + out.cost
        for key, value in out.extra.items():
            if isinstance(value, (int, float)):
                extra[key] = extra.get(key, 0) + value
    return scores, total.to_dict(), extra


def _row_record(report: Any, row_key: str, improvement_key: str | None) -> dict[str, Any]:
    """Metrics, intervals and the paired difference to the retriever of one row of an :class:`EvalReport`."""
    metrics = [m for m in METRICS if m in report.rows[row_key]]
    record: dict[str, Any] = {
        "metrics": {m: round(report.rows[row_key][m], 4) for m in metrics},
        "ci95": {m: report.ci95.get(row_key, {}).get(m) for m in metrics},
        "all_metrics": {m: round(v, 4) for m, v in report.rows[row_key].items()},
    }
    if improvement_key is not None and improvement_key in report.rows:
        record["delta_vs_retriever"] = {m: round(report.rows[improvement_key][m], 4) for m in metrics}
        record["delta_ci95"] = {m: report.ci95.get(improvement_key, {}).get(m) for m in metrics}
    return record


def _run_row(spec: RerankerSpec, reranker: Any, *, out: Path, data: str, config: str, split: str, top_k: int,
             max_queries: int | None, images_root: Any, batch_size: int, device: str, progress: bool,
             cache_dir: Any) -> dict[str, Any]:  # fmt: skip
    from skylink_model.data import load_skyrank_split, parse_retriever_config
    from skylink_model.evaluation import evaluate_reranking

    split_data = load_skyrank_split(data, config, split, images_root=images_root, cache_dir=cache_dir)
    rows_ds = split_data.rows
    if max_queries is not None:
        rows_ds = rows_ds.select(range(min(max_queries, len(rows_ds))))
    rows = [dict(r) for r in rows_ds]
    direction = parse_retriever_config(config).direction or "d2s"
    load_start = os.getloadavg()[0]
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "settings": _settings(spec, data=data, config=config, split=split, top_k=top_k, max_queries=max_queries),
        "row": spec.name,
        "kind": spec.kind,
        "config": config,
        "split": split,
        "num_queries": len(rows),
        "top_k": top_k,
        "gallery_size": split_data.gallery_size,
        "device": device_label(device),
    }
    scores = None
    cost = {"calls": 0, "tokens": 0, "seconds": 0.0}
    extra: dict[str, Any] = {}
    if reranker is not None:
        record["reranker"] = reranker.describe()
        params = _parameters(reranker.model)
        record["reranker"]["parameters"] = params
        record["zero_shot"] = bool(reranker.zero_shot)
        record["cost_only"] = bool(reranker.zero_shot and params is not None and params < TINY_PARAMETERS)
        reused = None
        if spec.kind == "fused":
            reused = _reuse_skylink_scores(out, spec, config, data, split, top_k, max_queries)
        if reused is not None:
            scores, cost = reused
            extra["scores_from"] = "the skylink row of the same run"
        else:
            scores, cost, extra = _score_rows(reranker, rows, split_data.images, top_k, direction, progress,
                                              f"{spec.name} {config}/{split}")  # fmt: skip
    else:
        record["reranker"] = {"name": "retriever", "zero_shot": False, "method": "the retriever's order"}
        record["zero_shot"] = False
        record["cost_only"] = False
    weight, fusion_info = None, None
    if spec.kind == "fused":
        from skylink_model.data import read_validation
        from skylink_model.evaluation import _auto_weight  # W by the one-standard-error rule on validation queries

        weight, fusion_info = _auto_weight(
            reranker.skylink, read_validation(str(spec.arg)), top_k, batch_size, progress, images_root=images_root,
            cache_dir=cache_dir, test_config=config, test_split=split, test_data=str(data),
        )  # fmt: skip
        if weight is None:
            raise OptionError(
                f"--reranker {spec.name}={spec.kind}:{spec.arg}: {fusion_info.get('reason', 'no fusion weight')}"
            )
    report = evaluate_reranking(rows, scores, top_k, fusion_weight=weight, gallery_size=split_data.gallery_size,
                                config=config, split=split, data=str(data),
                                fusion_info=fusion_info if weight is not None else None)  # fmt: skip
    if report.fusion is not None:
        record["fusion"] = report.fusion  # as the eval JSON records it (W = inf spelled "inf")
    if reranker is None:
        record.update(_row_record(report, "retriever", None))
    elif spec.kind == "fused":
        record.update(_row_record(report, "skylink_fused", "improvement_fused"))
    else:
        record.update(_row_record(report, "skylink", "improvement"))
    n = max(len(rows), 1)
    record["cost"] = {
        "calls_per_query": round(cost["calls"] / n, 3),
        "tokens_per_query": round(cost["tokens"] / n, 1),
        "ms_per_query": round(1000 * cost["seconds"] / n, 3),
        "total": cost,
        "load_avg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "counts": "calls: LVLM judgements; tokens: positions through the language model's input embedding (prompt, "
        "image placeholders, padding, generated tokens; a shared prefix once); ms: scoring wall time, images loaded",
    }
    record["extra"] = extra
    if scores is not None:
        record["scores"] = {q: [s[c] for c in s] for q, s in scores.items()}
        record["candidates"] = {q: list(s) for q, s in scores.items()}
    return record


def _reuse_skylink_scores(out: Path, spec: RerankerSpec, config: str, data: str, split: str, top_k: int,
                          max_queries: int | None) -> tuple[dict, dict] | None:  # fmt: skip
    """The scores and cost of a finished ``skylink`` row of the same run and settings, if there is one."""
    folder = out / "rows" / config
    if not folder.is_dir():
        return None
    twin = RerankerSpec("", "skylink", spec.arg).to_dict()
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        settings = dict(record.get("settings", {}))
        reranker = dict(settings.pop("reranker", {}), name="")
        wanted = _settings(spec, data=data, config=config, split=split, top_k=top_k, max_queries=max_queries)
        wanted.pop("reranker")
        if reranker == twin and settings == wanted and "scores" in record:
            scores = {q: dict(zip(record["candidates"][q], s, strict=True)) for q, s in record["scores"].items()}
            return scores, record["cost"]["total"]
    return None


def run_bench(
    data: str | Path,
    configs: Sequence[str],
    rerankers: Sequence[str | RerankerSpec],
    out: str | Path,
    *,
    split: str = "test",
    images_root: str | Path | None = None,
    top_k: int = 10,
    max_queries: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    notes: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    title: str | None = None,
    row_queries: Mapping[str, int] | None = None,
) -> BenchResult:
    """Run every re-ranker over every config into ``out`` and write the leaderboard (JSON, markdown, plot).

    Rows already in ``out/rows`` with the same settings are reused (an interrupted bench resumes); one with other
    settings raises :class:`~skyrank.errors.OutputExistsError` unless ``overwrite``. Each re-ranker's model is
    loaded once, for all configs. ``notes`` are printed under the table. ``max_queries`` caps every row at the first
    N queries of each config; ``row_queries`` (row name → N) caps single rows further.
    """
    specs = [r if isinstance(r, RerankerSpec) else parse_reranker(r) for r in rerankers]
    if not specs:
        raise OptionError("choose at least one --reranker")
    if not configs:
        raise OptionError("choose at least one --config")
    if top_k < 1:
        raise OptionError(f"--top-k must be ≥ 1, got {top_k}")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise OptionError(
            f"--reranker rows must have distinct names; repeated: {', '.join(repeated)} (use ROW=KIND:ARG)"
        )
    caps = _row_caps(names, max_queries, row_queries or {})
    out = Path(out)
    data = str(data)
    started = time.perf_counter()
    # Fused rows reuse the scores of a skylink row of the same run: run those first.
    for spec in sorted(specs, key=lambda s: s.kind == "fused"):
        reranker = None
        for config in configs:
            path = _row_path(out, config, spec.name)
            wanted = _settings(spec, data=data, config=config, split=split, top_k=top_k, max_queries=caps[spec.name])
            if path.is_file() and not overwrite:
                try:
                    existing = json.loads(path.read_text(encoding="utf-8")).get("settings")
                except (OSError, json.JSONDecodeError):
                    existing = None  # an unreadable row is recomputed
                if existing == wanted:
                    continue
                if existing is not None:
                    raise OutputExistsError(
                        f"{path} holds the row {spec.name!r} of other settings",
                        hint="Pass --overwrite to recompute it, or choose another --out.",
                    )
            if reranker is None and spec.kind != "retriever":
                reranker = build_reranker(spec, device=device, batch_size=batch_size)
            record = _run_row(spec, reranker, out=out, data=data, config=config, split=split, top_k=top_k,
                              max_queries=caps[spec.name], images_root=images_root, batch_size=batch_size,
                              device=device, progress=progress, cache_dir=cache_dir)  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(record, indent=1) + "\n")
        del reranker
    return write_leaderboard(out, configs, [s.name for s in specs], notes=notes, title=title,
                             wall_s=time.perf_counter() - started)  # fmt: skip


def _row_caps(names: Sequence[str], max_queries: int | None, row_queries: Mapping[str, int]) -> dict[str, int | None]:
    """Each row's query cap: the smaller of ``max_queries`` and its own ``row_queries`` entry (``None``: all)."""
    for label, value in [("--max-queries", max_queries), *((f"--row-queries {k}", v) for k, v in row_queries.items())]:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OptionError(f"{label} must be a whole number ≥ 1, got {value!r}")
    unknown = sorted(set(row_queries) - set(names))
    if unknown:
        raise OptionError(f"--row-queries names no row: {', '.join(unknown)}; the rows are {', '.join(names)}")
    caps: dict[str, int | None] = {}
    for name in names:
        given = [v for v in (max_queries, row_queries.get(name)) if v is not None]
        caps[name] = min(given) if given else None
    return caps


def write_leaderboard(out: str | Path, configs: Sequence[str], names: Sequence[str], *, notes: Sequence[str] = (),
                      title: str | None = None, wall_s: float | None = None) -> BenchResult:  # fmt: skip
    """Assemble ``leaderboard.json``/``.md``/``.png`` from the row files under ``out/rows`` (in the given order)."""
    out = Path(out)
    table: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        records = []
        for name in names:
            path = _row_path(out, config, name)
            if not path.is_file():
                raise OutputExistsError(f"{path} is missing: run the bench for it first")
            record = json.loads(path.read_text(encoding="utf-8"))
            record.pop("scores", None)
            record.pop("candidates", None)
            records.append(record)
        table[config] = records
    notes = list(notes)
    if any(r.get("cost_only") for rs in table.values() for r in rs):
        notes.append(f"† {COST_NOTE}, under {TINY_PARAMETERS:,} parameters: the row measures cost, not quality.")
    devices = sorted({r["device"] for rs in table.values() for r in rs})
    leaderboard = {
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "metrics": list(METRICS),
        "metric_note": "percent; [low, high] = 95% percentile bootstrap over queries (skyrank.metrics.bootstrap_ci); "
        "AP = Market-1501 AP, AP_precision = non-interpolated precision AP (skyrank.metrics)",
        "devices": devices,
        "notes": notes,
        "wall_s": None if wall_s is None else round(wall_s, 1),
        "configs": table,
    }
    json_path = write_text_atomic(out / "leaderboard.json", json.dumps(leaderboard, indent=2) + "\n")
    markdown = render_markdown(leaderboard)
    md_path = write_text_atomic(out / "leaderboard.md", markdown)
    plot_path = plot_leaderboard(leaderboard, out / "leaderboard.png")
    return BenchResult(out, json_path, md_path, plot_path, table, markdown)


def _cell(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.2f}"


def render_markdown(leaderboard: dict[str, Any]) -> str:
    """One table per config: metrics with 95% intervals, ΔR@1 to the retriever (paired interval), cost per query."""
    lines = [f"## {leaderboard['title']}", ""] if leaderboard.get("title") else []
    for config, records in leaderboard["configs"].items():
        first = records[0] if records else {}
        lines.append(f"**{config}** / {first.get('split', '')}: {first.get('num_queries', '?')} queries, top-"
                     f"{first.get('top_k', '?')} re-ranked; device: {first.get('device', '?')}")  # fmt: skip
        lines.append("")
        head = ["re-ranker", *leaderboard["metrics"], "ΔR@1", "calls/q", "tokens/q", "ms/q"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
        for r in records:
            name = r["row"] + (" †" if r.get("cost_only") else "") + (" (zero-shot)" if r.get("zero_shot") else "")
            if r.get("num_queries") != first.get("num_queries"):
                n = r.get("num_queries")
                name += f" [{n} {'query' if n == 1 else 'queries'}]"
            cells = [_cell(r["metrics"].get(m), r["ci95"].get(m)) for m in leaderboard["metrics"]]
            delta = r.get("delta_vs_retriever", {}).get("R@1")
            delta_ci = r.get("delta_ci95", {}).get("R@1")
            cells.append("" if delta is None else f"{delta:+.2f} [{delta_ci[0]:+.2f}, {delta_ci[1]:+.2f}]")
            cost = r["cost"]
            cells += [f"{cost['calls_per_query']:g}", f"{cost['tokens_per_query']:.0f}", f"{cost['ms_per_query']:.1f}"]
            lines.append("| " + " | ".join([name, *cells]) + " |")
        lines.append("")
    lines.append("Percent, [95% bootstrap interval]; ΔR@1: paired difference to the retriever. Cost per query: LVLM "
                 "calls, language-model tokens, scoring milliseconds on the device above.")  # fmt: skip
    for note in leaderboard.get("notes", []):
        lines.append("")
        lines.append(note)
    return "\n".join(lines) + "\n"


def plot_leaderboard(leaderboard: dict[str, Any], path: str | Path) -> Path:
    """R@1 with its 95% interval per row (left) and R@1 against milliseconds per query (right), one colour per
    config; rows flagged cost-only are drawn hollow."""
    from skylink_model.report.plots import _figure

    configs = list(leaderboard["configs"])
    n_rows = max((len(v) for v in leaderboard["configs"].values()), default=1)
    fig = _figure(11.0, 1.2 + 0.45 * n_rows * max(len(configs), 1))
    bars, scatter = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = [f"C{i % 10}" for i in range(len(configs))]
    labels, positions, y = [], [], 0.0
    for ci_, config in enumerate(configs):
        for r in leaderboard["configs"][config]:
            value = r["metrics"].get("R@1", 0.0)
            low, high = r["ci95"].get("R@1") or (value, value)
            hollow = bool(r.get("cost_only"))
            bars.barh(y, value, xerr=[[value - low], [high - value]], color="none" if hollow else colors[ci_],
                      edgecolor=colors[ci_], capsize=3)  # fmt: skip
            labels.append(r["row"] + (" †" if hollow else ""))
            positions.append(y)
            y += 1.0
            if not r["cost"]["calls_per_query"]:
                continue  # the retriever's row: no re-ranking cost to place on a log axis
            ms = max(r["cost"]["ms_per_query"], 1e-3)
            scatter.scatter([ms], [value], facecolors="none" if hollow else colors[ci_], edgecolors=colors[ci_])
            scatter.annotate(r["row"], (ms, value), fontsize=7, xytext=(3, 3), textcoords="offset points")
        y += 0.5
    bars.set_yticks(positions)
    bars.set_yticklabels(labels, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("R@1 (%), 95% bootstrap interval")
    scatter.set_xscale("log")
    scatter.set_xlabel("ms per query (log)")
    scatter.set_ylabel("R@1 (%)")
    for ci_, config in enumerate(configs):
        scatter.scatter([], [], color=colors[ci_], label=config)
    scatter.legend(fontsize=7, loc="best")
    if leaderboard.get("title"):
        fig.suptitle(leaderboard["title"], fontsize=10)
    from skylink_model.report.plots import _save

    return _save(fig, path)


__all__ = [
    "BenchResult", "KINDS", "METRICS", "RerankerSpec", "build_reranker", "parse_reranker", "render_markdown",
    "run_bench", "write_leaderboard",
]  # fmt: skip
