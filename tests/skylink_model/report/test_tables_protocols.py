"""`skyrank table` shows each benchmark's own columns (issue 20): the protocol the eval JSON names."""

from __future__ import annotations

from click.testing import CliRunner

import cli
from skylink_model.report.tables import build_table
from tests.skylink_model.report.test_tables import _write

VIGOR_ROW = {"R@1": 60.0, "R@5": 80.0, "R@10": 85.0, "R@top1%": 98.0, "Hit_Rate": 65.0}


def test_default_columns_follow_the_protocol(tmp_path):
    vigor = _write(tmp_path, "vigor", "sample4geo-vigor_same-d2s", {"retriever": VIGOR_ROW},
                   evaluation_protocol="vigor")
    table = build_table([vigor])
    assert table.metrics == ["R@1", "R@5", "R@10", "R@top1%", "Hit_Rate"]
    assert table.rows[0].cells == [60.0, 80.0, 85.0, 98.0, 65.0]
    assert "VIGOR same-area D→S" in table.render("markdown")
    # mixed with a JSON written before issue 20 (no protocol): the paper's R@1, AP follow VIGOR's columns
    old = _write(tmp_path, "u", "sample4geo-university1652-d2s", {"retriever": {"R@1": 92.0, "AP": 93.0}})
    mixed = build_table([vigor, old])
    assert mixed.metrics == ["R@1", "R@5", "R@10", "R@top1%", "Hit_Rate", "AP"]
    assert build_table([old]).metrics == ["R@1", "AP"]  # unchanged for University-1652
    assert build_table([vigor], metrics=["Hit_Rate"]).rows[0].cells == [65.0]  # --metrics still wins
    dense = _write(tmp_path, "d", "sample4geo-denseuav-d2s", {"retriever": {"R@1": 83.0, "R@5": 95.0, "SDM@1": 86.0}},
                   evaluation_protocol="denseuav")
    assert build_table([dense]).metrics == ["R@1", "R@5", "SDM@1"]


def test_cli_table_default_metrics_come_from_the_protocol(tmp_path):
    vigor = _write(tmp_path, "vigor", "sample4geo-vigor_same-d2s", {"retriever": VIGOR_ROW},
                   evaluation_protocol="vigor")
    result = CliRunner().invoke(cli.main, ["table", str(vigor), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].endswith("vigor_same-d2s:R@top1%,vigor_same-d2s:Hit_Rate")
