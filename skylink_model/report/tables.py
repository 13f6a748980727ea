"""The paper's Table 1 laid out from any set of evaluation JSONs (SkyLink, arXiv 2603.08063, Table 1).

Rows: per retriever, the retriever row, every re-ranker row the JSONs hold (``+SkyLink``, the fused score, the
listwise prompt baseline of appendix A.8) and the improvement rows (re-ranked − retriever, in points). Columns: one
group per benchmark / altitude / direction (University-1652 D→S and S→D, SUES-200 at 150–300 m, ...), one column
per metric in the group. A cell no JSON holds stays blank, so partial results lay out as they are.

The numbers are read, never recomputed: :mod:`skylink_model.evaluation` computes them with :mod:`skyrank.metrics`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skylink_model.report._io import EvalRun, load_eval_json
from skyrank.errors import EvalFileError

FORMATS: tuple[str, ...] = ("markdown", "latex", "csv", "html")
DEFAULT_METRICS: tuple[str, ...] = ("R@1", "AP")

#: Display names (anything else is shown as stored).
RETRIEVER_NAMES = {"sample4geo": "Sample4Geo", "mccg": "MCCG", "sdpl": "SDPL", "toyret": "ToyRet"}
BENCHMARK_NAMES = {"university1652": "University-1652", "sues200": "SUES-200", "synthetic": "Synthetic"}
BENCHMARK_NAMES.update({
    "vigor_same": "VIGOR same-area", "vigor_cross": "VIGOR cross-area", "cvusa": "CVUSA", "cvact": "CVACT val",
    "cvact_test": "CVACT test", "denseuav": "DenseUAV", "university1652_street": "University-1652 street",
})  # fmt: skip
DIRECTION_NAMES = {"d2s": "D→S", "s2d": "S→D"}
#: Row keys of EvalReport.rows in the order Table 1 shows them, with their labels.
ROW_LABELS = {
    "retriever": None,  # the retriever's own name
    "skylink": "+SkyLink",
    "skylink_fused": "+SkyLink (fused)",
    "prompt_baseline": "+Listwise prompt",
    "improvement": "Improvement",
    "improvement_fused": "Improvement (fused)",
    "improvement_skylink_fused": "Improvement (fused)",
    "improvement_prompt_baseline": "Improvement (prompt)",
}
_BENCH_ORDER = ("university1652", "sues200")


@dataclass(frozen=True, order=True)
class Column:
    """One benchmark / altitude / direction group of Table 1."""

    sort_key: tuple = field(repr=False, compare=True)
    benchmark: str = field(compare=False)
    altitude: str | None = field(compare=False)
    direction: str = field(compare=False)
    m: int | None = field(default=None, compare=False)

    @classmethod
    def of(cls, benchmark: str, altitude: str | None, direction: str, m: int | None = None) -> Column:
        bench_rank = _BENCH_ORDER.index(benchmark) if benchmark in _BENCH_ORDER else len(_BENCH_ORDER)
        alt = (0, int(altitude), "") if altitude and altitude.isdigit() else (1, 0, altitude or "")
        return cls((bench_rank, benchmark, alt, direction, -1 if m is None else m), benchmark, altitude, direction, m)

    def label(self, arrow: str | None = None) -> str:
        bench = BENCHMARK_NAMES.get(self.benchmark, self.benchmark)
        alt = f" {self.altitude}m" if self.altitude and self.altitude.isdigit() else (
            f" {self.altitude}" if self.altitude else ""
        )
        direction = DIRECTION_NAMES.get(self.direction, self.direction)
        if arrow is not None:
            direction = direction.replace("→", arrow)
        return f"{bench}{alt} {direction}" + (f" (m={self.m})" if self.m is not None else "")

    @property
    def key(self) -> str:
        return "-".join(p for p in (self.benchmark, self.altitude, self.direction) if p) + (
            f"-m{self.m}" if self.m is not None else ""
        )


@dataclass
class TableRow:
    retriever: str
    key: str
    label: str
    cells: list[float | None]
    ci: list[tuple[float, float] | None] = field(default_factory=list)

    @property
    def signed(self) -> bool:
        return self.key.startswith("improvement")


@dataclass
class Table:
    """Table 1 as values: ``columns`` × ``metrics`` cells per row, ``None`` where no JSON has the number."""

    columns: list[Column]
    metrics: list[str]
    rows: list[TableRow]
    notes: list[str]
    show_ci: bool = False

    def render(self, fmt: str = "markdown") -> str:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return {"markdown": _markdown, "latex": _latex, "csv": _csv, "html": _html}[fmt](self)


def parse_config(config: str) -> tuple[str, str, str | None, str, int | None]:
    """``<retriever>-<bench>[-<alt>]-<d2s|s2d>[-m<m>]`` → (retriever, benchmark, altitude, direction, m)."""
    from skylink_model.data import parse_retriever_config

    try:
        p = parse_retriever_config(config)
    except ValueError as e:
        raise EvalFileError(str(e)) from None
    return p.retriever, p.benchmark, p.altitude, p.direction, getattr(p, "m", None)


def _row_order(keys: Iterable[str]) -> list[str]:
    keys = list(dict.fromkeys(keys))
    known = [k for k in ROW_LABELS if k in keys]
    rest = [k for k in keys if k not in ROW_LABELS]
    plain = [k for k in known + rest if not k.startswith("improvement")]
    return plain + [k for k in known + rest if k.startswith("improvement")]


def _row_label(key: str, retriever: str) -> str:
    if key.endswith("]") and "[" in key:  # a sweep point: skylink[labels=hard]
        base, _, variant = key[:-1].partition("[")
        return f"{_row_label(base, retriever)} ({variant})"
    if key == "retriever":
        return RETRIEVER_NAMES.get(retriever, retriever)
    if key in ROW_LABELS:
        return str(ROW_LABELS[key])
    return key.replace("_", " ").capitalize() if key.startswith("improvement") else f"+{key}"


def sweep_runs(folder: str | Path, metrics: Sequence[str] | None = None) -> list[EvalRun]:
    """The points of a ``skyrank sweep`` folder as runs whose re-ranked rows are named per value.

    The retriever row is shown once, or once per value (``retriever[<param>=<value>]``) when one of ``metrics``
    changes with the value (the within-top-k AP of a top-k sweep); every point's other rows become
    ``<row>[<param>=<value>]``; improvement rows are left out (an ablation table compares the variants).
    """
    folder = Path(folder)
    summary_path = folder / "sweep.json"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        param, points = str(summary["param"]), list(summary["points"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalFileError(f"{folder}: not a `skyrank sweep` folder (no readable sweep.json: {e})") from None
    loaded = [(f"{param}={point['value']}", load_eval_json(folder / str(point["eval_json"]))) for point in points]
    # A retriever row that changes with the value (the within-top-k AP of a top-k sweep) is kept per value.
    def shown(row: dict[str, Any] | None) -> str:
        row = row or {}
        return json.dumps({m: row.get(m) for m in (metrics or row)}, sort_keys=True)

    vary = len({shown(run.rows.get("retriever")) for _, run in loaded}) > 1
    runs: list[EvalRun] = []
    for i, (variant, run) in enumerate(loaded):

        def rename(key: str, variant: str = variant) -> str:
            return key if key == "retriever" and not vary else f"{key}[{variant}]"

        keep = [k for k in run.rows if not k.startswith("improvement") and (k != "retriever" or i == 0 or vary)]
        data = dict(run.data)
        data["ci95"] = {rename(k): v for k, v in (run.data.get("ci95") or {}).items() if k in keep}
        runs.append(EvalRun(run.path, run.config, run.split, run.top_k, {rename(k): run.rows[k] for k in keep}, data))
    return runs


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def protocol_metrics(runs: Sequence[EvalRun]) -> list[str]:
    """Each benchmark's own columns (issue 20): the ``table`` metrics of every run's ``evaluation_protocol``
    (:data:`skyrank.metrics.PROTOCOLS`; VIGOR: R@1, R@5, R@10, R@top1%, Hit_Rate), in order of first appearance;
    :data:`DEFAULT_METRICS` (the paper's R@1, AP) for a JSON without a protocol."""
    from skyrank.metrics import PROTOCOLS

    out: list[str] = []
    for run in runs:
        protocol = PROTOCOLS.get(str(run.data.get("evaluation_protocol") or ""))
        out += [m for m in (protocol.table if protocol is not None else DEFAULT_METRICS) if m not in out]
    return out


def build_table(
    runs: Sequence[EvalRun | str | Path], metrics: Sequence[str] | None = None, ci: bool = False
) -> Table:
    """Lay out Table 1 from evaluation JSONs (paths or loaded :class:`EvalRun`) and sweep folders.

    A ``skyrank sweep`` folder gives one re-ranked row per swept value (``+SkyLink (labels=hard)``) under the
    retriever row of its first point: the ablation tables (SkyLink Tables 2 and 6).

    With ``ci`` each cell also shows the 95% bootstrap interval the JSON holds (``ci95``; blank where it has none).

    ``metrics=None`` shows each benchmark's own columns (:func:`protocol_metrics`).

    Two JSONs giving different numbers for the same retriever, column, row and metric raise
    :class:`EvalFileError` naming both files (pass one evaluation per cell).
    """
    if not runs:
        raise EvalFileError("no evaluation JSON given")
    if metrics is not None:
        metrics = [m.strip() for m in metrics if m.strip()]
        if not metrics:
            raise ValueError("no metric to show")
    loaded: list[EvalRun] = []
    for r in runs:
        if isinstance(r, EvalRun):
            loaded.append(r)
        elif Path(r).is_dir():
            loaded += sweep_runs(r, metrics)
        else:
            loaded.append(load_eval_json(r))
    if metrics is None:
        metrics = protocol_metrics(loaded)
    cells: dict[tuple[str, str, Column, str], tuple[float, Path]] = {}
    intervals: dict[tuple[str, str, Column, str], tuple[float, float]] = {}
    retrievers: list[str] = []
    columns: set[Column] = set()
    row_keys: dict[str, list[str]] = {}
    notes: list[str] = []
    for run in loaded:
        retriever, bench, alt, direction, m = parse_config(run.config)
        col = Column.of(bench, alt, direction, m)
        columns.add(col)
        if retriever not in retrievers:
            retrievers.append(retriever)
        row_keys.setdefault(retriever, []).extend(run.rows)
        for key, row in run.rows.items():
            for metric in metrics:
                value = _number(row.get(metric))
                if value is None:
                    continue
                where = (retriever, key, col, metric)
                if where in cells and abs(cells[where][0] - value) > 1e-9:
                    raise EvalFileError(
                        f"{cells[where][1]} and {run.path} both give {key} {metric} for {run.config} "
                        f"({cells[where][0]:.4f} vs {value:.4f}); pass one evaluation per cell"
                    )
                cells[where] = (value, run.path)
                interval = ((run.data.get("ci95") or {}).get(key) or {}).get(metric)
                if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(_number, interval)):
                    intervals[where] = (float(interval[0]), float(interval[1]))
        definitions = {**(run.data.get("ap_conventions") or {}), **(run.data.get("metric_definitions") or {})}
        for name, text in definitions.items():
            note = f"{name}: {text}"
            if name in metrics and note not in notes:
                notes.append(note)
    top_ks = sorted({r.top_k for r in loaded if r.top_k is not None})
    if top_ks:
        notes.append("re-ranking the retriever's top-" + "/".join(str(k) for k in top_ks))
    ordered_columns = sorted(columns)
    rows = []
    for retriever in retrievers:
        for key in _row_order(row_keys[retriever]):
            values = [
                cells.get((retriever, key, col, m), (None, None))[0] for col in ordered_columns for m in metrics
            ]
            cis = [intervals.get((retriever, key, col, m)) for col in ordered_columns for m in metrics]
            rows.append(TableRow(retriever, key, _row_label(key, retriever), values, cis))
    if ci:
        notes.append("[low, high]: 95% percentile-bootstrap interval over queries (improvements paired)")
    return Table(ordered_columns, metrics, rows, notes, show_ci=ci)


def format_table(runs: Sequence[EvalRun | str | Path], fmt: str = "markdown",
                 metrics: Sequence[str] | None = None, ci: bool = False) -> str:  # fmt: skip
    """:func:`build_table` rendered as ``markdown``, ``latex``, ``csv`` or ``html`` (what ``skyrank table`` prints)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return build_table(runs, metrics, ci).render(fmt)


def _fmt(value: float | None, signed: bool) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _cells(t: Table, row: TableRow, ci_format: str = " [{:.2f}, {:.2f}]") -> list[str]:
    out = []
    for j, value in enumerate(row.cells):
        text = _fmt(value, row.signed)
        interval = row.ci[j] if t.show_ci and j < len(row.ci) else None
        out.append(text + ci_format.format(*interval) if text and interval else text)
    return out


def _markdown(t: Table) -> str:
    head = ["Method"] + [f"{c.label()} {m}" for c in t.columns for m in t.metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in t.rows:
        label = f"**{row.label}**" if row.key == "retriever" else row.label
        lines.append("| " + " | ".join([label] + _cells(t, row)) + " |")
    lines += [""] + [f"- {n}" for n in t.notes] if t.notes else []
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("→", r"$\rightarrow$")):  # fmt: skip
        text = text.replace(a, b)
    return text


def _latex(t: Table) -> str:
    n = len(t.metrics)
    spec = "l" + " ".join("c" * n for _ in t.columns)
    groups = " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex(c.label())}}}" for c in t.columns)
    rules = " ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(t.columns)))
    lines = [
        "% Table 1 (SkyLink, arXiv 2603.08063); needs \\usepackage{booktabs}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        f" & {groups} \\\\",
        rules,
        "Method & " + " & ".join(_tex(m) for _ in t.columns for m in t.metrics) + r" \\",
        r"\midrule",
    ]
    previous = None
    for row in t.rows:
        if previous is not None and row.retriever != previous:
            lines.append(r"\midrule")
        previous = row.retriever
        cells = _cells(t, row, r" {{\scriptsize [{:.2f}, {:.2f}]}}")
        lines.append(" & ".join([_tex(row.label)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"] + [f"% {_tex(n)}" for n in t.notes]
    return "\n".join(lines) + "\n"


def _csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    suffixes = ("", ":ci_low", ":ci_high") if t.show_ci else ("",)
    w.writerow(["retriever", "row", "label"] + [f"{c.key}:{m}{x}" for c in t.columns for m in t.metrics
                                                for x in suffixes])  # fmt: skip
    for row in t.rows:
        values = []
        for j, v in enumerate(row.cells):
            values.append("" if v is None else f"{v:.4f}")
            if t.show_ci:
                interval = row.ci[j] if j < len(row.ci) else None
                values += [f"{interval[0]:.4f}", f"{interval[1]:.4f}"] if interval else ["", ""]
        w.writerow([row.retriever, row.key, row.label] + values)
    return buf.getvalue()


def _html(t: Table) -> str:
    from html import escape

    n = len(t.metrics)
    groups = "".join(f'<th colspan="{n}">{escape(c.label())}</th>' for c in t.columns)
    names = "".join(f"<th>{escape(m)}</th>" for _ in t.columns for m in t.metrics)
    lines = [
        '<table class="table1">',
        f'<thead><tr><th rowspan="2">Method</th>{groups}</tr><tr>{names}</tr></thead>',
        "<tbody>",
    ]
    previous = None
    for row in t.rows:
        cls = ["first"] if previous is not None and row.retriever != previous else []
        previous = row.retriever
        cls += ["improvement"] if row.signed else (["retriever"] if row.key == "retriever" else [])
        attr = f' class="{" ".join(cls)}"' if cls else ""
        cells = "".join(f"<td>{escape(c)}</td>" for c in _cells(t, row))
        lines.append(f"<tr{attr}><th>{escape(row.label)}</th>{cells}</tr>")
    lines.append("</tbody></table>")
    if t.notes:
        lines.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in t.notes) + "</ul>")
    return "\n".join(lines) + "\n"
