"""Each benchmark's own evaluator in `skyrank eval` (issue 20): hand-built rows and manifests, numbers by hand."""

from __future__ import annotations

import json
import math

import pytest

from skylink_model.evaluation import evaluate, evaluate_reranking, image_lonlat
from skyrank.errors import SkyRankError
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

# VIGOR: one positive, three semi-positives per query; R@K counts the positive only.
VIGOR_ROWS = [
    # q1: semi s1 above the positive: an R@1 miss but a hit; SkyLink puts p1 first.
    {"query_id": "q1", "positive_ids": ["p1"], "positive_ranks": [2], "semi_positive_ids": ["s1", "s2", "s3"],
     "retrieved_ids": ["s1", "p1", "n1", "n2"]},
    # q2: semi first, then a negative, then the positive: a miss (the code's strictness); SkyLink lifts n1 to 1.
    {"query_id": "q2", "positive_ids": ["p2"], "positive_ranks": [3], "semi_positive_ids": ["t1", "t2", "t3"],
     "retrieved_ids": ["t1", "n1", "p2", "n2"]},
    # q3: the positive beyond the retrieved list (rank 7): a miss whatever the order.
    {"query_id": "q3", "positive_ids": ["p3"], "positive_ranks": [7], "semi_positive_ids": ["u1", "u2", "u3"],
     "retrieved_ids": ["u1", "u2", "u3", "m1"]},
]  # fmt: skip
VIGOR_SCORES = {
    "q1": {"s1": 0.1, "p1": 0.9, "n1": 0.0},
    "q2": {"t1": 0.1, "n1": 0.9, "p2": 0.5},  # n1, p2, t1: p2 at 2 below a negative, still a miss
    "q3": {"u1": 0.3, "u2": 0.2, "u3": 0.1},
}


def test_vigor_protocol_by_hand():
    report = evaluate_reranking(VIGOR_ROWS, VIGOR_SCORES, top_k=3, gallery_size=300, protocol="vigor")
    # no AP (Sample4Geo's VIGOR evaluator reports none); R@1% = R@(300 // 100) = R@3; Hit_Rate last
    assert report.metrics == ["R@1", "R@5", "R@10", "R@top1%", "Hit_Rate"]
    assert report.top1_percent_k == 3 and report.top1_percent_definition == "floor"
    ret, sky = report.rows["retriever"], report.rows["skylink"]
    assert ret["R@1"] == 0.0 and ret["R@5"] == pytest.approx(200 / 3) and ret["R@top1%"] == pytest.approx(200 / 3)
    assert ret["Hit_Rate"] == pytest.approx(100 / 3)  # q1 only
    assert sky["R@1"] == pytest.approx(100 / 3)  # q1's positive first
    assert sky["Hit_Rate"] == pytest.approx(100 / 3)  # q1 yes, q2 no (n1 above p2), q3 no
    assert report.rows["improvement"]["Hit_Rate"] == pytest.approx(0.0)
    data = report.to_dict()
    assert data["evaluation_protocol"] == "vigor" and data["top1_percent_definition"] == "floor"
    assert data["metric_definitions"]["R@top1%"].startswith("floor: Sample4Geo")
    assert "semi-positives" in data["metric_definitions"]["Hit_Rate"]
    text = report.format_table()
    assert "Hit_Rate" in text and "300 // 100" in text and "vigor.py" in text


def test_rows_without_semi_positives_count_only_the_positive_first():
    rows = [{k: v for k, v in r.items() if k != "semi_positive_ids"} for r in VIGOR_ROWS]
    assert evaluate_reranking(rows, None, top_k=3, protocol="vigor").rows["retriever"]["Hit_Rate"] == 0.0


def test_cvusa_and_street_protocols_columns():
    rows = [{"query_id": "q", "positive_ids": ["p"], "positive_ranks": [89], "retrieved_ids": ["a", "b"]}]
    cvusa = evaluate_reranking(rows, None, top_k=2, gallery_size=8884, protocol="cvusa")
    assert cvusa.metrics == ["R@1", "R@5", "R@10", "R@top1%"] and cvusa.top1_percent_k == 88
    assert cvusa.rows["retriever"]["R@top1%"] == 0.0  # rank 89 > 88 (the SAFA convention would count it)
    street = evaluate_reranking(rows, None, top_k=2, gallery_size=951, protocol="university1652-street")
    assert street.top1_percent_k == 11 and "AP" in street.metrics
    # no protocol: the University-1652 columns and CMC, as before issue 20
    old = evaluate_reranking(rows, None, top_k=2, gallery_size=951)
    assert old.metrics == street.metrics and old.evaluation_protocol is None and old.top1_percent_definition == "cmc"


def _dense_rows():
    # gallery g0..g9 at lon 120 + i * step; the query sits at g0's location (lon 120, lat 30)
    ids = [f"g{i}" for i in range(10)]
    return [{"query_id": "q", "positive_ids": ["g0"], "positive_ranks": [2],
             "retrieved_ids": [ids[1], ids[0], *ids[2:]]}]  # fmt: skip


def test_denseuav_sdm_by_hand():
    step = 2.0**-13
    lonlat = {f"g{i}": (120.0 + i * step, 30.0) for i in range(10)} | {"q": (120.0, 30.0)}
    scores = {"q": {"g1": 0.0, "g0": 1.0, "g2": -1.0}}
    report = evaluate_reranking(_dense_rows(), scores, top_k=3, gallery_size=18198, protocol="denseuav",
                                lonlat=lonlat)  # fmt: skip
    assert report.metrics[-7:] == ["SDM@1", "SDM@3", "SDM@5", "SDM@10", "MA@5m", "MA@10m", "MA@20m"]
    assert report.top1_percent_k == 183
    s1 = math.exp(-5000 * step)
    assert report.rows["retriever"]["SDM@1"] == pytest.approx(100 * s1)
    assert report.rows["skylink"]["SDM@1"] == pytest.approx(100.0)
    # SDM@3 retriever: order g1, g0, g2 -> (s1 + 2/3 + s2/3) / 2
    s2 = math.exp(-5000 * 2 * step)
    assert report.rows["retriever"]["SDM@3"] == pytest.approx(100 * (s1 + 2 / 3 + s2 / 3) / 2)
    assert report.rows["skylink"]["SDM@3"] == pytest.approx(100 * (1 + 2 / 3 * s1 + s2 / 3) / 2)
    # MA@m: the retriever's top-1 g1 is 11.77 m from the query, SkyLink's g0 is at it
    assert [report.rows["retriever"][m] for m in ("MA@5m", "MA@10m", "MA@20m")] == [0.0, 0.0, 100.0]
    assert [report.rows["skylink"][m] for m in ("MA@5m", "MA@10m", "MA@20m")] == [100.0] * 3
    assert report.rows["improvement"]["MA@10m"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="coordinates"):
        evaluate_reranking(_dense_rows(), None, top_k=3, protocol="denseuav")
    short = [dict(_dense_rows()[0], retrieved_ids=["g1", "g0", "g2", "g3", "g4"])]
    assert evaluate_reranking(short, None, top_k=3, protocol="denseuav", lonlat=lonlat).metrics[-5:] == [
        "SDM@3", "SDM@5", "MA@5m", "MA@10m", "MA@20m"]  # SDM@10 needs 10 retrieved ids per query


def _write_manifest(folder, **params):
    (folder / "skyrank_manifest.json").write_text(json.dumps({"format_version": 2, "m": 5, **params}))


def test_evaluate_reads_the_protocol_from_the_manifest(tmp_path):
    data = make_tiny_skyrank(tmp_path / "ds", n_locations=6, m=5)
    before = evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False)
    assert before.evaluation_protocol is None and before.top1_percent_k == 1  # CMC: round(0.06) + 1
    _write_manifest(data, benchmark="toy", evaluation_protocol="cvusa")
    report = evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False, json_path=tmp_path / "e.json")
    assert report.evaluation_protocol == "cvusa" and report.top1_percent_k == 0  # 6 // 100
    assert report.metrics == ["R@1", "R@5", "R@10", "R@top1%"] and report.rows["retriever"]["R@top1%"] == 0.0
    written = json.loads((tmp_path / "e.json").read_text())
    assert (written["evaluation_protocol"], written["top1_percent_definition"]) == ("cvusa", "floor")
    _write_manifest(data, benchmark="university1652")  # no key: the benchmark's name
    assert evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False).evaluation_protocol == "university1652"
    _write_manifest(data, benchmark="synthetic", evaluation_protocol="synthetic")  # no evaluator of its own
    plain = evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False)
    assert plain.evaluation_protocol is None and plain.extra["evaluation_protocol_recorded"] == "synthetic"
    assert plain.rows == before.rows


def test_evaluate_denseuav_reads_coordinates(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=6, m=5)
    _write_manifest(data, evaluation_protocol="denseuav")
    bare = evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False)  # no coordinates stored
    assert "SDM@1" not in bare.metrics and bare.evaluation_protocol == "denseuav" and "AP" in bare.metrics
    assert "longitude/latitude" in bare.extra["metrics_omitted"] and "Not computed: SDM@1" in bare.format_table()
    with pytest.raises(SkyRankError, match="longitude/latitude"):
        image_lonlat(data, RETRIEVER_CONFIG, "test")
    for config in ("gallery-toy", "queries-toy"):
        path = data / config / "test-00000-of-00001.parquet"
        table = pq.read_table(path)
        labels = [int(x) for x in table.column("label").to_pylist()]
        table = table.append_column("longitude", pa.array([120.0 + 1e-4 * x for x in labels], pa.float64()))
        table = table.append_column("latitude", pa.array([30.0] * len(labels), pa.float64()))
        pq.write_table(table, path)
    lonlat = image_lonlat(data, RETRIEVER_CONFIG, "test")
    assert lonlat["drone/0003/d.jpg"] == pytest.approx((120.0003, 30.0))
    report = evaluate(None, data, RETRIEVER_CONFIG, "test", progress=False)
    assert report.evaluation_protocol == "denseuav" and report.metrics[-5:-3] == ["SDM@3", "SDM@5"]
    assert report.metrics[-3:] == ["MA@5m", "MA@10m", "MA@20m"]
    import datasets

    rows = list(datasets.load_dataset(str(data), RETRIEVER_CONFIG, split="test", cache_dir=str(tmp_path / "c")))
    alone = evaluate_reranking(rows, None, top_k=10, gallery_size=6, protocol="denseuav", lonlat=lonlat)
    assert report.rows["retriever"] == pytest.approx(alone.rows["retriever"])
    assert 0.0 < report.rows["retriever"]["SDM@1"] <= 100.0
