"""Contact sheets (framing, selection by rank change), the R@K curve and ``report.html`` on a tiny demo-like run,
through the library and through ``skyrank eval --per-query`` + ``skyrank show``."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from skylink_model.report.page import write_report
from skylink_model.report.plots import recall_curve
from skylink_model.report.sheets import NEGATIVE, POSITIVE, contact_sheet, rank_change, select_queries
from skyrank.errors import EvalFileError
from tests.skylink_model.test_data import RETRIEVER_CONFIG

RECORDS = [
    {"query_id": "up", "positive_ids": ["p"], "positive_ranks": [3], "reranked_positive_ranks": [1],
     "retrieved_ids": ["a", "b", "p"]},
    {"query_id": "down", "positive_ids": ["p"], "positive_ranks": [1], "reranked_positive_ranks": [3],
     "retrieved_ids": ["p", "a", "b"]},
    {"query_id": "same", "positive_ids": ["p"], "positive_ranks": [2], "reranked_positive_ranks": [2],
     "retrieved_ids": ["a", "p", "b"]},
    {"query_id": "none", "positive_ids": [], "positive_ranks": [], "reranked_positive_ranks": [],
     "retrieved_ids": ["a", "b", "c"]},
]  # fmt: skip


def test_selection_by_rank_change():
    assert [rank_change(r) for r in RECORDS] == [2.0, -2.0, 0.0, 0.0]
    assert [r["query_id"] for r in select_queries(RECORDS, 2, "best")] == ["up", "same"]
    assert [r["query_id"] for r in select_queries(RECORDS, 1, "worst")] == ["down"]
    assert [r["query_id"] for r in select_queries(RECORDS, 10, "first")] == ["up", "down", "same", "none"]
    with pytest.raises(ValueError):
        select_queries(RECORDS, 2, "random")
    with pytest.raises(ValueError):
        select_queries(RECORDS, 0)


def test_recall_curve_meets_at_top_k():
    curve = recall_curve(RECORDS)
    assert curve["K"] == [1.0, 2.0, 3.0]
    assert curve["retriever"] == pytest.approx([25.0, 50.0, 75.0])
    assert curve["reranked"] == pytest.approx([25.0, 50.0, 75.0])
    assert recall_curve(RECORDS[:1])["reranked"] == [100.0, 100.0, 100.0]


def test_contact_sheet_frames_positives():
    record = {"query_id": "q", "gt_id": "p", "positive_ids": ["p"], "positive_ranks": [2],
              "retrieved_ids": ["a", "p", "b"], "retrieved_scores": [0.9, 0.8, 0.7], "scores": [0.1, 2.0, 0.3],
              "reranked_ids": ["p", "b", "a"], "reranked_positive_ranks": [1]}  # fmt: skip
    colours = {"q": (200, 0, 0), "p": (0, 0, 200), "a": (0, 200, 0), "b": (200, 200, 0)}
    sheet = contact_sheet(record, lambda i: Image.new("RGB", (60, 40), colours[i]), thumb=40)
    cell, x0, y_title, row_h = 48, 160, 36, 48 + 30 + 10  # layout of sheets.contact_sheet with thumb = 40
    retriever_y, rerank_y = y_title + row_h, y_title + 2 * row_h
    assert sheet.getpixel((x0 + 1 * (cell + 10) + 1, retriever_y + 1)) == POSITIVE  # p is #2 of the retriever
    assert sheet.getpixel((x0 + 1, retriever_y + 1)) == NEGATIVE
    assert sheet.getpixel((x0 + 1, rerank_y + 1)) == POSITIVE  # SkyLink put p first
    assert sheet.getpixel((x0 + 24, rerank_y + 24)) == colours["p"]  # and shows p's image in that frame
    missing = contact_sheet(record, lambda i: (_ for _ in ()).throw(FileNotFoundError(i)), thumb=40)
    assert missing.size == sheet.size  # a missing image is drawn as missing, not a failed report
    fused = contact_sheet({**record, "fused_scores": [0.5, -1.0, 0.7], "fused_ids": ["b", "a", "p"],
                           "fused_positive_ranks": [3]}, lambda i: Image.new("RGB", (60, 40), colours[i]), thumb=40)
    fused_y = y_title + 3 * row_h
    assert fused.height == sheet.height + row_h  # one more row: the fused order
    assert fused.getpixel((x0 + 2 * (cell + 10) + 1, fused_y + 1)) == POSITIVE  # p is third in the fused order
    assert fused.getpixel((x0 + 1, fused_y + 1)) == NEGATIVE


def test_report_on_the_tiny_run(tiny_run, tmp_path):
    out = tmp_path / "report"
    result = write_report([tiny_run["eval_json"]], out, queries=3, select="worst")
    html = result.html.read_text()
    assert result.html == out / "report.html" and html.startswith("<!doctype html>")
    assert len(result.sheets) == 3 and all(p.is_file() and p.suffix == ".png" for p in result.sheets)
    for src in re.findall(r'src="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert len(re.findall(r'<img class="sheet"', html)) == 3
    assert '<table class="table1">' in html and "+SkyLink" in html and "Improvement" in html
    rows = json.loads(tiny_run["eval_json"].read_text())["rows"]
    r_at_1 = re.search(r"<tr><th>\+SkyLink</th><td>([0-9.]+)</td>", html.split("R@K, K = 1..top-k")[1]).group(1)
    assert float(r_at_1) == pytest.approx(rows["skylink"]["R@1"], abs=0.05)  # curve and eval agree
    r_at_1 = re.search(r"<tr><th>\+SkyLink fused</th><td>([0-9.]+)</td>", html).group(1)
    assert float(r_at_1) == pytest.approx(rows["skylink_fused"]["R@1"], abs=0.05)  # the fused order too
    with Image.open(result.sheets[0]) as img:
        assert img.width > 400 and img.height > 300

    # An evaluation without its per-query file still gets its table, and says how to get pictures.
    bare = json.loads(tiny_run["eval_json"].read_text())
    bare["extra"].pop("per_query")
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    result = write_report([tmp_path / "bare.json"], tmp_path / "bare-report")
    assert result.sheets == [] and "--per-query" in result.html.read_text()
    with pytest.raises(EvalFileError):
        write_report([], tmp_path / "empty")


def test_eval_per_query_then_show_through_the_cli(tiny_run, tmp_path):
    runner = CliRunner()
    report_json, per_query = tmp_path / "e" / "eval.json", tmp_path / "e" / "eval.per_query.jsonl"
    result = runner.invoke(cli.main, [
        "eval", "--data", str(tiny_run["data"]), "--config", RETRIEVER_CONFIG, "--adapter", str(tiny_run["run"]),
        "--top-k", "4", "--json", str(report_json), "--per-query", str(per_query), "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(report_json.read_text())["extra"]["per_query"] == "eval.per_query.jsonl"
    assert len(per_query.read_text().splitlines()) == json.loads(report_json.read_text())["num_queries"]
    result = runner.invoke(cli.main, ["show", str(report_json), "--out", str(tmp_path / "r"), "--queries", "2",
                                      "--best"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 contact sheet(s)" in result.output and (tmp_path / "r" / "report.html").is_file()
    result = runner.invoke(cli.main, ["show", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 11 and "Traceback" not in result.output


def test_a_per_query_record_with_misaligned_scores_is_refused_not_truncated():
    from skyrank.errors import EvalFileError

    record = {"query_id": "q1", "retrieved_ids": ["a", "b", "c"], "retrieved_scores": [0.9, 0.8]}
    with pytest.raises(EvalFileError, match="2 retrieved_scores for 3 retrieved_ids"):
        contact_sheet(record, lambda image_id: Image.new("RGB", (8, 8)))
