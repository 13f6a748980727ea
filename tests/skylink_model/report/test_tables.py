"""Table 1 from a few evaluation JSONs, in markdown, LaTeX, CSV and HTML, and through ``skyrank table``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from skylink_model.report.tables import build_table, format_table
from skyrank.errors import EvalFileError


def _write(folder: Path, name: str, config: str, rows: dict, top_k: int = 10, **extra) -> Path:
    path = folder / f"{name}.json"
    data = {"config": config, "split": "test", "top_k": top_k, "num_queries": 5, "rows": rows,
            "ap_conventions": {"AP": "Market-1501 trapezoid AP"}, **extra}  # fmt: skip
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def evals(tmp_path: Path) -> list[Path]:
    """Sample4Geo on University-1652 D2S + S2D and SUES-200 300 m / 150 m D2S; MCCG retriever-only on U-1652 D2S."""
    return [
        _write(tmp_path, "s4g-sues300", "sample4geo-sues200-300-d2s",
               {"retriever": {"R@1": 90.0, "AP": 91.0}, "skylink": {"R@1": 95.5, "AP": 96.25},
                "improvement": {"R@1": 5.5, "AP": 5.25}}),
        _write(tmp_path, "s4g-u-d2s", "sample4geo-university1652-d2s",
               {"retriever": {"R@1": 92.65, "AP": 93.81, "AP_precision": 94.0},
                "skylink": {"R@1": 93.0, "AP": 94.0, "AP_precision": 95.1},
                "skylink_fused": {"R@1": 93.5, "AP": 94.2},
                "improvement": {"R@1": 0.35, "AP": 0.19, "AP_precision": 1.1}},
               ci95={"retriever": {"R@1": [92.0, 93.3]}, "improvement": {"R@1": [0.1, 0.6], "AP": "junk"}}),
        _write(tmp_path, "s4g-u-s2d", "sample4geo-university1652-s2d",
               {"retriever": {"R@1": 95.0, "AP": 80.0}, "skylink": {"R@1": 94.0, "AP": 81.0},
                "improvement": {"R@1": -1.0, "AP": 1.0}}),
        _write(tmp_path, "s4g-sues150", "sample4geo-sues200-150-d2s",
               {"retriever": {"R@1": 85.0, "AP": 87.5}}),
        _write(tmp_path, "mccg-u-d2s", "mccg-university1652-d2s", {"retriever": {"R@1": 89.4, "AP": None}},
               schema_version=2, metric_definitions={"AP_precision": "precision AP (SkyLink Table 1's AP)"}),
    ]  # fmt: skip


def test_layout_orders_columns_and_rows_and_leaves_missing_cells_blank(evals):
    table = build_table(evals)
    assert [c.key for c in table.columns] == [
        "university1652-d2s", "university1652-s2d", "sues200-150-d2s", "sues200-300-d2s"
    ]  # fmt: skip
    assert [(r.retriever, r.key) for r in table.rows] == [
        ("sample4geo", "retriever"), ("sample4geo", "skylink"), ("sample4geo", "skylink_fused"),
        ("sample4geo", "improvement"), ("mccg", "retriever"),
    ]  # fmt: skip
    s4g = table.rows[0].cells
    assert s4g == [92.65, 93.81, 95.0, 80.0, 85.0, 87.5, 90.0, 91.0]
    assert table.rows[2].cells == [93.5, 94.2, None, None, None, None, None, None]
    assert table.rows[4].cells == [89.4, None, None, None, None, None, None, None]  # AP null in the JSON: blank
    assert any("top-10" in n for n in table.notes) and any("trapezoid" in n for n in table.notes)


def test_markdown(evals):
    text = format_table(evals, "markdown")
    lines = text.splitlines()
    assert lines[0] == (
        "| Method | University-1652 D→S R@1 | University-1652 D→S AP | University-1652 S→D R@1 | "
        "University-1652 S→D AP | SUES-200 150m D→S R@1 | SUES-200 150m D→S AP | SUES-200 300m D→S R@1 | "
        "SUES-200 300m D→S AP |"
    )
    assert lines[2] == "| **Sample4Geo** | 92.65 | 93.81 | 95.00 | 80.00 | 85.00 | 87.50 | 90.00 | 91.00 |"
    assert lines[3] == "| +SkyLink | 93.00 | 94.00 | 94.00 | 81.00 |  |  | 95.50 | 96.25 |"
    assert lines[5] == "| Improvement | +0.35 | +0.19 | -1.00 | +1.00 |  |  | +5.50 | +5.25 |"
    assert lines[6] == "| **MCCG** | 89.40 |  |  |  |  |  |  |  |"


def test_latex_groups_escapes_and_separates_retrievers(evals):
    text = format_table(evals, "latex", metrics=["R@1", "AP_precision"])
    assert "% AP\\_precision: precision AP (SkyLink Table 1's AP)" in text  # schema 2's metric_definitions
    assert r"\multicolumn{2}{c}{University-1652 D$\rightarrow$S}" in text
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-5} \cmidrule(lr){6-7} \cmidrule(lr){8-9}" in text
    assert r"Method & R@1 & AP\_precision & R@1 & AP\_precision" in text
    assert r"Improvement & +0.35 & +1.10 & -1.00 &  &  &  & +5.50 &  \\" in text
    body = text.split(r"\midrule")
    assert len(body) == 3 and body[2].lstrip().startswith(r"MCCG & 89.40")  # a rule between the retrievers
    assert text.count(r"\toprule") == 1 and r"\end{tabular}" in text


def test_csv_round_trips(evals):
    rows = list(csv.DictReader(io.StringIO(format_table(evals, "csv", metrics=["R@1", "AP", "R@5"]))))
    assert rows[0]["label"] == "Sample4Geo" and rows[0]["university1652-d2s:R@1"] == "92.6500"
    assert rows[0]["sues200-150-d2s:R@5"] == "" and rows[3]["row"] == "improvement"
    assert float(rows[3]["university1652-s2d:R@1"]) == -1.0
    assert [r["retriever"] for r in rows] == ["sample4geo"] * 4 + ["mccg"]


def test_bootstrap_intervals_on_request(evals):
    lines = format_table(evals, "markdown", ci=True).splitlines()
    assert lines[2].startswith("| **Sample4Geo** | 92.65 [92.00, 93.30] | 93.81 | 95.00 |")
    assert lines[5].startswith("| Improvement | +0.35 [0.10, 0.60] | +0.19 | -1.00 |")  # a malformed interval: none
    assert "[" not in format_table(evals, "markdown").split("- ")[0]
    assert r"+0.35 {\scriptsize [0.10, 0.60]}" in format_table(evals, "latex", ci=True)
    rows = list(csv.DictReader(io.StringIO(format_table(evals, "csv", ci=True))))
    assert rows[0]["university1652-d2s:R@1:ci_low"] == "92.0000" and rows[0]["university1652-d2s:AP:ci_high"] == ""


def test_a_mined_pool_size_gets_its_own_column(evals, tmp_path):
    m50 = _write(tmp_path, "m50", "sample4geo-university1652-d2s-m50", {"retriever": {"R@1": 92.65, "AP": 93.0}})
    table = build_table([*evals, m50])
    assert [c.key for c in table.columns][:2] == ["university1652-d2s", "university1652-d2s-m50"]
    assert "University-1652 D→S (m=50) AP" in table.render("markdown").splitlines()[0]


def test_conflicting_and_bad_inputs_raise(tmp_path, evals):
    clash = _write(tmp_path, "again", "sample4geo-university1652-d2s", {"retriever": {"R@1": 50.0}})
    with pytest.raises(EvalFileError, match="pass one evaluation per cell"):
        build_table([*evals, clash])
    same = _write(tmp_path, "same", "sample4geo-university1652-d2s", {"retriever": {"R@1": 92.65}})
    assert build_table([*evals, same]).rows[0].cells[0] == 92.65
    (tmp_path / "junk.json").write_text('{"hello": 1}')
    with pytest.raises(EvalFileError, match="not an evaluation JSON"):
        build_table([tmp_path / "junk.json"])
    with pytest.raises(EvalFileError, match="no such evaluation JSON"):
        build_table([tmp_path / "missing.json"])
    bad = _write(tmp_path, "bad", "not-a-config", {"retriever": {"R@1": 1.0}})
    with pytest.raises(EvalFileError, match="not a retriever config"):
        build_table([bad])
    with pytest.raises(ValueError, match="format"):
        format_table(evals, "docx")


def test_skyrank_table_command(evals, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli.main, ["table", *map(str, evals), "--format", "csv", "--metrics", "R@1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("retriever,row,label,university1652-d2s:R@1")
    out = tmp_path / "t" / "table1.tex"
    result = runner.invoke(cli.main, ["table", *map(str, evals), "--format", "latex", "--out", str(out)])
    assert result.exit_code == 0 and out.read_text().startswith("% Table 1")
    result = runner.invoke(cli.main, ["table", str(tmp_path / "nope.json")])
    assert result.exit_code == 11 and "no such evaluation JSON" in result.output and "Traceback" not in result.output


def _sweep(folder: Path, param: str, points: list[tuple[object, dict]]) -> Path:
    folder.mkdir(parents=True)
    entries = []
    for value, rows in points:
        path = _write(folder, f"{param}={value}", "sample4geo-university1652-d2s", rows)
        entries.append({"value": value, "eval_json": path.name, "rows": rows})
    (folder / "sweep.json").write_text(json.dumps({"param": param, "points": entries}))
    return folder


def test_a_sweep_folder_gives_an_ablation_table(tmp_path):
    base = {"R@1": 90.0, "AP": 91.0}
    labels = _sweep(tmp_path / "labels", "labels", [
        ("soft", {"retriever": base, "skylink": {"R@1": 93.0, "AP": 94.0}, "improvement": {"R@1": 3.0, "AP": 3.0}}),
        ("hard", {"retriever": base, "skylink": {"R@1": 92.0, "AP": 93.5}, "improvement": {"R@1": 2.0, "AP": 2.5}}),
    ])  # fmt: skip
    lines = format_table([labels], "markdown").splitlines()
    assert lines[2:5] == [
        "| **Sample4Geo** | 90.00 | 91.00 |",
        "| +SkyLink (labels=soft) | 93.00 | 94.00 |",
        "| +SkyLink (labels=hard) | 92.00 | 93.50 |",
    ]
    assert len([line for line in lines if line.startswith("|")]) == 5  # no improvement rows
    top_k = _sweep(tmp_path / "top_k", "top_k", [
        (1, {"retriever": {**base, "AP_conservative": 90.0}, "skylink": {"R@1": 90.0, "AP_conservative": 90.0}}),
        (5, {"retriever": {**base, "AP_conservative": 92.0}, "skylink": {"R@1": 91.0, "AP_conservative": 92.5}}),
    ])  # fmt: skip
    assert [r.label for r in build_table([top_k], ["R@1"]).rows] == [
        "Sample4Geo", "+SkyLink (top_k=1)", "+SkyLink (top_k=5)"
    ]  # fmt: skip
    per_value = build_table([top_k], ["R@1", "AP_conservative"]).rows  # the within-top-k AP changes with k
    assert [(r.label, r.cells) for r in per_value] == [
        ("Sample4Geo (top_k=1)", [90.0, 90.0]), ("+SkyLink (top_k=1)", [90.0, 90.0]),
        ("Sample4Geo (top_k=5)", [90.0, 92.0]), ("+SkyLink (top_k=5)", [91.0, 92.5]),
    ]  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalFileError, match="not a `skyrank sweep` folder"):
        build_table([tmp_path / "empty"])
