"""Readers of VIGOR, CVUSA, CVACT, DenseUAV and University-1652 street on tiny trees in their real layouts
(written by :mod:`skyrank.benchmarks.synthetic.trees` with placeholder files: readers never decode). The full counts
are checked by ``benchmarks/full_count_trees.py`` (BENCHMARKS.md)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks.cvact import read_act_data
from skyrank.benchmarks.denseuav import read_gps
from skyrank.benchmarks.synthetic import trees
from skyrank.errors import BenchmarkLayoutError
from skyrank.metrics import positives_within_radius

VIGOR_SMALL = {"Chicago": (6, 3, 4), "NewYork": (5, 2, 3), "SanFrancisco": (4, 2, 2), "Seattle": (5, 3, 2)}


def _tree(tmp_path: Path, tree: str, counts: dict, **kw) -> Path:
    writer, _, sub, _ = trees.TREES[tree]
    root = tmp_path / tree / sub
    writer(root, counts, trees.placeholder_source(root), **kw)
    return root


@pytest.mark.parametrize("layout", ["sample4geo", "original"])
def test_vigor_counts_semi_positives_and_gallery_over_cities(tmp_path: Path, layout: str) -> None:
    root = _tree(tmp_path, "vigor", VIGOR_SMALL, layout=layout)
    same = get_benchmark("vigor_same")
    test = same.load_split(root, "test")
    # Same-area: every city's test panoramas against every city's tiles (not per city).
    assert (len(test.queries), len(test.gallery)) == (4 + 3 + 2 + 2, 6 + 5 + 4 + 5)
    assert len(same.load_split(root, "train").queries) == 3 + 2 + 2 + 3
    cross = get_benchmark("vigor_cross")
    ct, cr = cross.load_split(root, "test"), cross.load_split(root, "train")
    assert (len(ct.queries), len(ct.gallery)) == (7 + 4, 6 + 4)  # whole pano_label_balanced of Chicago + SF
    assert (len(cr.queries), len(cr.gallery)) == (5 + 5, 5 + 5)
    gallery = {g.image_id: g for g in test.gallery}
    labels = Counter(g.label for g in test.gallery)
    for q in test.queries:
        assert q.view == "ground" and labels[q.label] == 1  # one positive: the first tile of the label line
        assert len(q.semi_positives) == 3 and all(s in gallery for s in q.semi_positives)
        assert all(gallery[s].label != q.label for s in q.semi_positives)
        assert q.latitude is not None and abs(q.latitude - gallery[next(
            g for g in gallery if gallery[g].label == q.label)].latitude) < 1e-3  # fmt: skip
    first = test.queries[0].image_id
    pano_dir = "ground/" if layout == "sample4geo" else "Chicago/panorama/"
    assert first.startswith(pano_dir) and first.endswith(",.jpg") and first.count(",") == 3


def test_vigor_label_line_is_parsed_positive_first(tmp_path: Path) -> None:
    root = _tree(tmp_path, "vigor", VIGOR_SMALL)
    line = (root / "splits/Chicago/same_area_balanced_test.txt").read_text().splitlines()[0].split()
    rs = get_benchmark("vigor_same").load_split(root, "test")
    q = next(r for r in rs.queries if r.image_id == f"ground/Chicago/{line[0]}")
    assert q.label == "Chicago/" + line[1].removesuffix(".png")
    assert [s.rsplit("/", 1)[1] for s in q.semi_positives] == [line[4], line[7], line[10]]


def test_vigor_wrong_layouts(tmp_path: Path) -> None:
    root = _tree(tmp_path, "vigor", VIGOR_SMALL)
    bench = get_benchmark("vigor_same")
    with pytest.raises(ValueError, match="direction"):
        bench.load_split(root, "test", "s2d")
    (root / "splits/Seattle/same_area_balanced_test.txt").unlink()
    with pytest.raises(BenchmarkLayoutError, match="splits/Seattle/same_area_balanced_test.txt is missing"):
        bench.load_split(root, "test")
    root = _tree(tmp_path / "b", "vigor", VIGOR_SMALL)
    shutil.rmtree(root / "ground" / "NewYork")
    with pytest.raises(BenchmarkLayoutError, match="ground/NewYork/ \\+ satellite/NewYork/"):
        bench.load_split(root, "test")
    root = _tree(tmp_path / "c", "vigor", VIGOR_SMALL)
    lst = root / "splits/Chicago/satellite_list.txt"
    lst.write_text("\n".join(lst.read_text().split()[1:]))
    with pytest.raises(BenchmarkLayoutError, match="which no satellite_list.txt"):
        bench.load_split(root, "test")
    root = _tree(tmp_path / "d", "vigor", VIGOR_SMALL)
    next((root / "satellite/Seattle").iterdir()).unlink()
    with pytest.raises(BenchmarkLayoutError, match="1 image\\(s\\) listed .* missing"):
        bench.load_split(root, "test")


def test_cvusa_one_to_one_and_errors(tmp_path: Path) -> None:
    root = _tree(tmp_path, "cvusa", {"train": 5, "test": 3})
    bench = get_benchmark("cvusa")
    rs = bench.load_split(root, "test")
    assert [q.label for q in rs.queries] == [g.label for g in rs.gallery] == ["0000006", "0000007", "0000008"]
    assert rs.queries[0].image_id == "streetview/panos/0000006.jpg"
    assert rs.gallery[0].image_id == "bingmap/19/0000006.jpg"
    assert len(bench.load_split(root, "train").queries) == 5
    (root / "streetview/panos/0000007.jpg").unlink()
    with pytest.raises(BenchmarkLayoutError, match="splits/val-19zl.csv .*streetview/panos/0000007.jpg"):
        bench.load_split(root, "test")
    (root / "splits/train-19zl.csv").unlink()
    with pytest.raises(BenchmarkLayoutError, match="train-19zl.csv is missing.*Expected layout"):
        bench.load_split(root, "train")


def test_cvact_one_based_indices_and_the_5m_rule(tmp_path: Path) -> None:
    root = _tree(tmp_path, "cvact", {"train": 4, "val": 2, "test": 6}, near_every=3)
    data = read_act_data(root / "ACT_data.mat")
    assert np.asarray(data["train"]).tolist() == [0, 1, 2, 3]  # 1..4 in the file
    assert np.asarray(data["val"]).tolist() == [4, 5] and np.asarray(data["test"]).tolist() == list(range(4, 10))
    val = get_benchmark("cvact").load_split(root, "test")
    assert [q.label for q in val.queries] == [data["panoIds"][i] for i in (4, 5)]
    assert all(q.positives is None for q in val.queries) and val.gallery[0].image_id.startswith("ANU_data_small/")
    test = get_benchmark("cvact_test").load_split(root, "test")
    assert len(test.queries) == 6 and test.gallery[0].image_id.startswith("ANU_data_test/satview_polish/")
    sizes = [len(q.positives or ()) for q in test.queries]
    # test ids 1 and 4 are 3 m from ids 0 and 3: those pairs share two positives, the others have one.
    assert sizes == [2, 2, 1, 2, 2, 1]
    by_label = {g.label: g.image_id for g in test.gallery}
    assert all(by_label[q.label] in q.positives for q in test.queries)
    one = get_benchmark("cvact_test_1to1").load_split(root, "test")
    assert [q.image_id for q in one.queries] == [q.image_id for q in test.queries]
    assert all(q.positives is None for q in one.queries)  # one-to-one: the label rule
    # A missing file drops the pair, as Sample4Geo's loader does, and is listed.
    lost = root / f"ANU_data_test/streetview/{data['panoIds'][9]}_grdView.jpg"
    lost.unlink()
    again = get_benchmark("cvact_test").load_split(root, "test")
    assert len(again.queries) == 5 and again.missing_files == [lost.relative_to(root).as_posix()]


def test_positives_within_is_inclusive_at_5m() -> None:
    utm = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0], [15.0, 0.01]])
    # 5 m counts, 5.00001 m does not
    assert [p.tolist() for p in positives_within_radius(utm)] == [[0, 1], [0, 1, 2], [1, 2], [3]]


def test_cvact_wrong_layouts(tmp_path: Path) -> None:
    root = _tree(tmp_path, "cvact", {"train": 2, "val": 1, "test": 2})
    shutil.rmtree(root / "ANU_data_test")
    with pytest.raises(BenchmarkLayoutError, match="ANU_data_test/streetview is missing"):
        get_benchmark("cvact_test").load_split(root, "test")
    (root / "ACT_data.mat").write_bytes(b"not a mat file")
    with pytest.raises(BenchmarkLayoutError, match="ACT_data.mat"):
        get_benchmark("cvact").load_split(root, "test")


def test_denseuav_gallery_of_every_location_six_positives_and_gps(tmp_path: Path) -> None:
    root = _tree(tmp_path, "denseuav", {"train": 3, "test": 2})
    bench = get_benchmark("denseuav")
    rs = bench.load_split(root, "test", "d2s")
    assert (len(rs.queries), len(rs.gallery)) == (2 * 3, 5 * 6)  # gallery = train + test locations
    per_label = Counter(g.label for g in rs.gallery)
    assert {per_label[q.label] for q in rs.queries} == {6}
    assert rs.queries[0].image_id == "test/query_drone/000003/H100.JPG"
    gps = read_gps(root / "Dense_GPS_ALL.txt")
    line = (root / "Dense_GPS_ALL.txt").read_text().splitlines()[3].split()
    assert gps["000003"] == (float(line[2][1:]), float(line[1][1:]))  # E<lon> N<lat>: longitude first
    assert (rs.queries[0].latitude, rs.queries[0].longitude) == gps["000003"]
    s2d = bench.load_split(root, "test", "s2d")
    assert (len(s2d.queries), len(s2d.gallery)) == (2 * 6, 5 * 3)
    (root / "Dense_GPS_ALL.txt").unlink()
    with pytest.raises(BenchmarkLayoutError, match="Dense_GPS_ALL.txt is missing"):
        bench.load_split(root, "test")


def test_university1652_street_against_every_satellite_tile(tmp_path: Path) -> None:
    counts = {"train": 2, "train_per_id": 2, "test": 3, "queries": 7, "distractors": 2}
    root = _tree(tmp_path, "u1652-street", counts)
    rs = get_benchmark("university1652_street").load_split(root, "test")
    assert (len(rs.queries), len(rs.gallery)) == (7, 5)  # distractor tiles included
    assert {q.view for q in rs.queries} == {"ground"} and all(q.image_id.startswith("test/query_street/")
                                                              for q in rs.queries)  # fmt: skip
    assert Counter(q.label for q in rs.queries) == Counter({"0002": 3, "0003": 2, "0004": 2})
    with pytest.raises(ValueError, match="direction"):
        get_benchmark("university1652_street").load_split(root, "test", "s2d")
    shutil.rmtree(root / "test" / "query_street")
    with pytest.raises(BenchmarkLayoutError, match="test/query_street"):
        get_benchmark("university1652_street").load_split(root, "test")


@pytest.mark.parametrize(
    ("name", "protocol"),
    [("vigor_same", "vigor"), ("vigor_cross", "vigor"), ("cvusa", "cvusa"), ("cvact", "cvact"),
     ("cvact_test", "cvact"), ("cvact_test_1to1", "cvact"), ("denseuav", "denseuav"),
     ("university1652_street", "university1652-street"),
     ("university1652", "university1652"), ("sues200", "sues200"), ("synthetic", "university1652")],
)  # fmt: skip
def test_declared_protocols_and_licences(name: str, protocol: str) -> None:
    bench = get_benchmark(name)
    assert bench.evaluation_protocol == protocol
    assert bench.redistributable == (name == "synthetic") and bench.derived_data == (name == "synthetic")
    assert bench.citation.startswith("@") and bench.license_link
