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


def test_contact_sheet_draws_a_panorama_query_wide():
    from PIL import Image

    from skylink_model.report.sheets import GROUND_TRUTH, contact_sheet, tile_size

    assert tile_size(Image.new("RGB", (2048, 1024)), 40) == (80, 40)  # VIGOR 2:1
    assert tile_size(Image.new("RGB", (1232, 224)), 40) == (220, 40)  # CVUSA 5.5:1
    assert tile_size(Image.new("RGB", (4000, 200)), 40) == (240, 40)  # capped at 6:1
    assert tile_size(Image.new("RGB", (50, 50)), 40) == (40, 40)
    record = {"query_id": "q", "gt_id": "p", "positive_ids": ["p"], "positive_ranks": [1],
              "retrieved_ids": ["p", "a"], "retrieved_scores": [0.9, 0.8]}  # fmt: skip
    sizes = {"q": (1232, 224), "p": (64, 64), "a": (64, 64)}
    colours = {"q": (200, 0, 0), "p": (0, 0, 200), "a": (0, 200, 0)}
    sheet = contact_sheet(record, lambda i: Image.new("RGB", sizes[i], colours[i]), thumb=40)
    x0, y0, border = 160, 36, 4  # sheets.contact_sheet's layout at thumb = 40
    # the query fills a 220 x 40 thumbnail (squared it would be 40 x 7 in a grey letterbox)
    assert sheet.getpixel((x0 + border + 210, y0 + border + 20)) == colours["q"]
    assert sheet.getpixel((x0 + border + 5, y0 + border + 2)) == colours["q"]
    gt_x = x0 + 220 + 2 * border + 10  # the ground truth follows the wide tile
    assert sheet.getpixel((gt_x + 1, y0 + 1)) == GROUND_TRUTH
    assert sheet.width >= gt_x + 48


def test_contact_sheet_frames_vigor_semi_positives():
    from PIL import Image

    from skylink_model.evaluation import per_query_records
    from skylink_model.report.sheets import NEGATIVE, POSITIVE, SEMI_POSITIVE, contact_sheet

    row = {"query_id": "q", "gt_id": "p", "positive_ids": ["p"], "positive_ranks": [2], "semi_positive_ids": ["s"],
           "retrieved_ids": ["s", "p", "n"], "retrieved_scores": [0.9, 0.8, 0.7]}  # fmt: skip
    (record,) = per_query_records([row], None, 3)
    assert record["semi_positive_ids"] == ["s"]
    assert "semi_positive_ids" not in per_query_records([dict(row, semi_positive_ids=[])], None, 3)[0]
    sheet = contact_sheet(record, lambda i: Image.new("RGB", (40, 40)), thumb=40)
    x0, y = 160, 36 + 48 + 30 + 10  # the retriever row at thumb = 40
    frames = [sheet.getpixel((x0 + j * 58 + 1, y + 1)) for j in range(3)]
    assert frames == [SEMI_POSITIVE, POSITIVE, NEGATIVE]
