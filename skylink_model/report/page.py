"""``report.html``: one static page with Table 1, each evaluation's rows and R@K curve, the contact sheets and the
ablation plots. Every picture is a PNG beside the page (relative links), so the folder can be copied or served
as is; no script, no external resource.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from skylink_model.report._io import EvalRun, load_eval_json, load_per_query, write_text_atomic
from skylink_model.report.plots import plot_recall_curve, recall_curve
from skylink_model.report.sheets import write_contact_sheets
from skylink_model.report.tables import _row_label, build_table, parse_config
from skyrank.errors import EvalFileError

ROW_ORDER = ("retriever", "skylink", "skylink_fused", "prompt_baseline")

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #111; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
thead th { background: #f3f4f6; text-align: center; } tbody th { text-align: left; font-weight: normal; }
tr.retriever th { font-weight: bold; } tr.first > * { border-top: 2px solid #888; }
tr.improvement td { color: #0a6b2d; }
.notes, .meta { color: #555; font-size: .85em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
img.sheet { display: block; max-width: 100%; border: 1px solid #ddd; margin: .6em 0; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.legend span { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin: 0 .3em 0 1em; }
"""


@dataclass
class ReportResult:
    html: Path
    sheets: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _slug(run: EvalRun, i: int) -> str:
    return f"{i:02d}-{run.config}-{run.split}".replace("/", "_")


def _resolve_data(run: EvalRun, data: str | Path | None) -> str:
    if data is not None:
        return str(data)
    stored = run.data.get("data")
    if not stored:
        raise EvalFileError(f"{run.path} does not name its dataset; pass --data")
    if not Path(stored).is_absolute() and not Path(stored).exists() and (run.path.parent / stored).exists():
        return str(run.path.parent / stored)
    return str(stored)


def _rows_table(run: EvalRun) -> str:
    names = [k for k in ROW_ORDER if k in run.rows] + [k for k in run.rows if k not in ROW_ORDER]
    metrics: list[str] = []
    for name in names:
        metrics += [m for m, v in run.rows[name].items() if isinstance(v, (int, float)) and m not in metrics]
    head = "".join(f"<th>{escape(m)}</th>" for m in metrics)
    body = []
    for name in names:
        signed = name.startswith("improvement")
        cells = []
        for m in metrics:
            v = run.rows[name].get(m)
            cells.append(f"<td>{v:+.2f}</td>" if signed and isinstance(v, (int, float)) else
                         f"<td>{v:.2f}</td>" if isinstance(v, (int, float)) else "<td></td>")  # fmt: skip
        cls = ' class="improvement"' if signed else ""
        label = _row_label(name, parse_config(run.config)[0])
        body.append(f"<tr{cls}><th>{escape(label)}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _curve_table(curve: dict[str, list[float]]) -> str:
    ks = [int(k) for k in curve["K"]]
    head = "".join(f"<th>R@{k}</th>" for k in ks)
    body = ""
    for key, label in (("retriever", "retriever"), ("reranked", "+SkyLink"), ("fused", "+SkyLink fused")):
        if key in curve:
            body += f"<tr><th>{label}</th>" + "".join(f"<td>{v:.1f}</td>" for v in curve[key]) + "</tr>"
    return f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    eval_jsons: Sequence[str | Path],
    out: str | Path,
    *,
    data: str | Path | None = None,
    images_root: str | Path | None = None,
    queries: int = 8,
    select: str = "first",
    metrics: Sequence[str] | None = None,
    sweeps: Sequence[str | Path] = (),
    thumb: int = 112,
    title: str = "SkyLink re-ranking report",
) -> ReportResult:
    """Write ``out/report.html`` with its figures (``out/figures``) and contact sheets (``out/sheets``).

    Args:
        eval_jsons: evaluation JSONs (``skyrank eval --json``); those with a per-query file (``--per-query``) get
            an R@K curve and contact sheets.
        data / images_root: where the images are when the JSON's ``data`` has moved or holds ids only.
        queries / select: how many sheets per evaluation, picked ``first``, ``best`` or ``worst`` by rank change.
        sweeps: sweep folders (``skyrank sweep --out``) whose plots and points are added.
    """
    out = Path(out)
    runs = [load_eval_json(p) for p in eval_jsons]
    if not runs and not sweeps:
        raise EvalFileError("nothing to report: pass evaluation JSONs and/or sweep folders")
    result = ReportResult(out / "report.html")
    parts = [f"<h1>{escape(title)}</h1>"]
    if runs:
        parts.append("<h2>Table 1</h2>")
        parts.append(build_table(runs, metrics, ci=any(r.data.get("ci95") for r in runs)).render("html"))

    for i, run in enumerate(runs, start=1):
        slug = _slug(run, i)
        n = run.data.get("num_queries")
        parts.append(f'<h2 id="{escape(slug)}">{escape(run.config)} / {escape(run.split)}</h2>')
        parts.append(
            f'<p class="meta">{escape(str(run.path))}: {n} queries, re-ranking the top-{run.top_k}; '
            f"dataset {escape(str(run.data.get('data')))}; gallery protocol "
            f"{escape(str(run.data.get('gallery_protocol') or 'not recorded'))}</p>"
        )
        parts.append(_rows_table(run))
        pq = run.per_query_path
        if pq is None:
            parts.append('<p class="notes">No per-query file: evaluate with <code>skyrank eval ... --json '
                         "eval.json --per-query eval.per_query.jsonl</code> for the R@K curve and the contact "
                         "sheets.</p>")  # fmt: skip
            continue
        records = load_per_query(pq)
        curve = recall_curve(records)
        png = plot_recall_curve(curve, out / "figures" / f"{slug}-recall.png", title=f"{run.config} / {run.split}")
        result.figures.append(png)
        parts.append("<h3>R@K, K = 1..top-k</h3>")
        parts.append(f'<div class="figures"><img class="plot" src="{png.relative_to(out).as_posix()}" '
                     f'alt="R@K curve of {escape(run.config)}"><div>{_curve_table(curve)}</div></div>')  # fmt: skip

        from skylink_model.data import load_skyrank_split

        split = load_skyrank_split(_resolve_data(run, data), run.config, run.split, images_root=images_root)
        written = write_contact_sheets(records, split.images, out / "sheets" / slug, queries=queries, select=select,
                                       thumb=thumb)  # fmt: skip
        how = {"first": "as stored", "best": "largest gains first", "worst": "largest losses first"}[select]
        parts.append(f"<h3>Contact sheets ({len(written)} queries, {how})</h3>")
        parts.append('<p class="legend">frame:<span style="background:#16a34a"></span>positive'
                     '<span style="background:#2563eb"></span>ground truth'
                     '<span style="background:#aaaaaa"></span>other candidate. Rank change = retriever rank '
                     "− SkyLink rank of the best positive.</p>")  # fmt: skip
        for record, path in written:
            result.sheets.append(path)
            parts.append(f'<img class="sheet" loading="lazy" src="{path.relative_to(out).as_posix()}" '
                         f'alt="contact sheet of {escape(str(record["query_id"]))}">')  # fmt: skip

    for sweep_dir in sweeps:
        parts += _sweep_section(Path(sweep_dir), out, result)

    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")  # fmt: skip
    write_text_atomic(result.html, page)
    return result


def _sweep_section(folder: Path, out: Path, result: ReportResult) -> list[str]:
    summary_path = folder / "sweep.json"
    try:
        summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EvalFileError(f"{summary_path}: not a sweep summary ({e}); pass a `skyrank sweep` folder") from None
    param = str(summary.get("param"))
    parts = [f"<h2>Ablation: {escape(param)} ({escape(str(summary.get('config')))})</h2>"]
    plot = folder / str(summary.get("plot"))
    if plot.is_file():
        target = out / "figures" / f"sweep-{folder.name}-{plot.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, target)
        result.figures.append(target)
        parts.append(f'<img class="plot" src="{target.relative_to(out).as_posix()}" alt="sweep of {escape(param)}">')
    rows = []
    for point in summary.get("points", []):
        r = point.get("rows", {})
        cells = [(r.get(k) or {}).get(m) for k in ("retriever", "skylink") for m in ("R@1", "R@5", "AP")]
        tds = "".join(f"<td>{c:.2f}</td>" if isinstance(c, (int, float)) else "<td></td>" for c in cells)
        rows.append(f"<tr><th>{escape(str(point.get('value')))}</th>{tds}</tr>")
    head = "".join(f"<th>{a} {m}</th>" for a in ("retriever", "+SkyLink") for m in ("R@1", "R@5", "AP"))
    parts.append(f"<table><thead><tr><th>{escape(param)}</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return parts
