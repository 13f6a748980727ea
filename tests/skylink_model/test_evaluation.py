"""Table-1 evaluation on a crafted scoring with numbers computed by hand, and evaluate() on a tiny model."""

from __future__ import annotations

import json

import pytest

from skylink_model.evaluation import (
    EvalReport,
    choose_weight,
    evaluate,
    evaluate_reranking,
    metric_columns,
    parse_fuse,
    reranked_topk,
)
from skylink_model.fusion import fuse_scores, zscore
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

ROWS = [
    # q1: single positive at rank 3; SkyLink lifts it to 1.
    {
        "query_id": "q1",
        "positive_ids": ["p1"],
        "positive_ranks": [3],
        "retrieved_ids": ["n1", "n2", "p1", "n3", "n4", "n5"],
    },
    # q2: the positive (rank 8) is beyond the top-3: its rank stays whatever the scores.
    {
        "query_id": "q2",
        "positive_ids": ["p2"],
        "positive_ranks": [8],
        "retrieved_ids": ["m1", "m2", "m3", "m4", "m5", "m6"],
    },
    # q3: positives at ranks 1, 2 and 9; SkyLink puts a negative first, pa/pb tie (retriever order kept).
    {
        "query_id": "q3",
        "positive_ids": ["pa", "pb", "pc"],
        "positive_ranks": [1, 2, 9],
        "retrieved_ids": ["pa", "pb", "x1", "x2", "x3", "x4"],
    },
]
SCORES = {
    "q1": {"n1": 0.1, "n2": 0.2, "p1": 3.0},
    "q2": {"m1": 1.0, "m2": 2.0, "m3": 3.0},
    "q3": {"pa": 1.0, "pb": 1.0, "x1": 5.0},
}
# By hand, top-3 (AP: Market-1501 trapezoid, one positive at rank r gives 1 if r = 1 else 1/(2r); AP_precision:
# 1/r for one positive; AP_conservative: AP_precision, 0 without a positive in the top-3; AP_topk_market1501:
# trapezoid over the top-3 list alone):
#   retriever: AP q1 = 1/6, q2 = 1/16, q3 = (1 + 1 + (2/8 + 3/9)/2)/3 = 0.763889
#              AP_precision q1 = 1/3, q2 = 1/8, q3 = (1 + 1 + 3/9)/3 = 0.777778; conservative 1/3, 0, 0.777778
#              top-k list AP 1/6, 0, 1
#   SkyLink:   AP q1 = 1, q2 = 1/16, q3 ranks 2,3,9 = ((0 + 1/2)/2 + (1/2 + 2/3)/2 + (2/8 + 3/9)/2)/3 = 0.375
#              AP_precision 1, 1/8, (1/2 + 2/3 + 3/9)/3 = 0.5; conservative 1, 0, 0.5
#              top-k list AP 1, 0, positions 2,3 = ((0 + 1/2)/2 + (1/2 + 2/3)/2)/2 = 0.416667
RETRIEVER = {
    "R@1": 100 / 3, "R@5": 200 / 3, "R@10": 100.0, "AP": 33.101852, "AP_precision": 41.203704,
    "AP_conservative": 37.037037, "AP_topk_market1501": 38.888889,
}  # fmt: skip
SKYLINK = {
    "R@1": 100 / 3, "R@5": 200 / 3, "R@10": 100.0, "AP": 47.916667, "AP_precision": 54.166667,
    "AP_conservative": 50.0, "AP_topk_market1501": 47.222222,
}  # fmt: skip


def test_reranked_topk_ties_keep_retriever_order():
    assert reranked_topk(["a", "b", "c", "d"], {"a": 1, "b": 2, "c": 2}, 3) == ["b", "c", "a"]
    with pytest.raises(KeyError, match="c"):
        reranked_topk(["a", "b", "c"], {"a": 1, "b": 2}, 3)


def test_crafted_scoring_hand_computed():
    report = evaluate_reranking(ROWS, SCORES, top_k=3, config="toy-cfg", split="test")
    for name, expected in (("retriever", RETRIEVER), ("skylink", SKYLINK)):
        for metric, value in expected.items():
            assert report.rows[name][metric] == pytest.approx(value, abs=1e-4), (name, metric)
    assert report.rows["improvement"]["AP"] == pytest.approx(47.916667 - 33.101852, abs=1e-4)
    assert report.rows["improvement"]["R@1"] == pytest.approx(0.0)
    assert "prompt_baseline" not in report.rows and report.num_queries == 3


def test_prompt_baseline_row_and_json(tmp_path):
    all_zero = {r["query_id"]: dict.fromkeys(r["retrieved_ids"][:3], 0.0) for r in ROWS}  # ties: retriever order
    report = evaluate_reranking(
        ROWS, SCORES, 3, prompt_scores_by_query=all_zero, config="toy-cfg", split="test", gallery_protocol="official"
    )
    for metric, value in RETRIEVER.items():
        assert report.rows["prompt_baseline"][metric] == pytest.approx(value, abs=1e-4)
    assert report.rows["improvement_prompt_baseline"]["AP"] == pytest.approx(0.0, abs=1e-9)
    data = json.loads(report.to_json(tmp_path / "eval.json"))
    assert json.loads((tmp_path / "eval.json").read_text()) == data
    assert {"retriever", "skylink", "prompt_baseline", "improvement"} <= set(data["rows"])
    for row in ("retriever", "skylink", "prompt_baseline"):
        assert set(data["rows"][row]) == set(RETRIEVER)
    assert data["config"] == "toy-cfg" and data["split"] == "test" and data["top_k"] == 3
    assert data["schema_version"] == 2 and data["ap"] == ["market1501", "precision"]
    defs = data["metric_definitions"]
    assert "Market-1501" in defs["AP"] and "A.1" in defs["AP_conservative"] and "precision" in defs["AP_precision"]
    assert "optimistic" in data["tie_rule"] and data["gallery_size"] is None and data["top1_percent_k"] is None
    lo, hi = data["ci95"]["skylink"]["R@1"]
    assert 0.0 <= lo <= report.rows["skylink"]["R@1"] <= hi <= 100.0
    assert data["protocol"] and data["gallery_protocol"] == "official"
    table = report.format_table()
    assert "Retriever" in table and "+SkyLink" in table and "Improvement" in table and "+14.81" in table


def test_ap_choice_and_top1_percent():
    only_m = evaluate_reranking(ROWS, SCORES, top_k=3, ap=["market1501"], gallery_size=250)
    assert only_m.metrics == ["R@1", "R@5", "R@10", "R@top1%", "AP", "AP_topk_market1501"]
    assert only_m.top1_percent_k == 3  # CMC[round(2.5)] = CMC[2] (0-based) = R@3
    # R@3: q1 (rank 3) and q3 (rank 1) count for the retriever; q2 (rank 8) does not
    assert only_m.rows["retriever"]["R@top1%"] == pytest.approx(200 / 3)
    only_p = evaluate_reranking(ROWS, SCORES, top_k=3, ap=["precision"])
    assert set(only_p.rows["skylink"]) == {"R@1", "R@5", "R@10", "AP_precision", "AP_conservative"}
    assert "AP(prec)" in only_p.format_table() and "AP(M1501)" not in only_p.format_table()
    assert metric_columns(with_top1pct=False) == (
        "R@1", "R@5", "R@10", "AP", "AP_topk_market1501", "AP_precision", "AP_conservative",
    )  # fmt: skip
    with pytest.raises(ValueError, match="precision"):
        metric_columns(["trapezoid"])


def test_zscore_and_fusion_by_hand():
    assert zscore([3.0, 2.0, 1.0]) == pytest.approx([1.224745, 0.0, -1.224745], abs=1e-6)
    assert list(zscore([5.0, 5.0])) == [0.0, 0.0]  # constant scores standardise to zeros
    retr, sky = [3.0, 2.0, 1.0], [0.0, 1.0, 2.0]
    assert fuse_scores(sky, retr, 0.5) == pytest.approx([-0.612372, 0.0, 0.612372], abs=1e-6)
    assert fuse_scores(sky, retr, 1.0) == pytest.approx([0.0, 0.0, 0.0])
    assert fuse_scores(sky, retr, float("inf")) == pytest.approx(zscore(retr))  # the retriever's order
    with pytest.raises(ValueError):
        fuse_scores(sky, retr, -1.0)
    with pytest.raises(ValueError):
        fuse_scores(sky, retr[:2], 1.0)
    assert parse_fuse("AUTO") == "auto" and parse_fuse("none") == "none" and parse_fuse("1.5") == 1.5
    for bad in ("x", "-1", "inf"):
        with pytest.raises(ValueError):
            parse_fuse(bad)


# Validation queries for choose_weight, worked by hand (z of [3, 2, 1] = [1.2247, 0, -1.2247]):
#   va: positive c2; S = [0, 10, 0] -> z(S) = [-0.7071, 1.4142, -0.7071]; c2 first iff 1.4142 > -0.7071 + 1.2247 W,
#       i.e. W < 1.732.
#   vb: positive c1; S = [1, 0, 2] -> z(S) = [0, -1.2247, 1.2247]; c1 first iff 1.2247 W >= 1.2247 (1 - W) (a tie
#       keeps the retriever order, c1 first), i.e. W >= 0.5.
# Both right for 0.5 <= W < 1.732: grid 0.5, 0.75, 1, 1.5 -> the largest, 1.5.
VAL_ROWS = [
    {"query_id": "va", "positive_ids": ["c2"], "positive_ranks": [2], "retrieved_ids": ["c1", "c2", "c3"],
     "retrieved_scores": [3.0, 2.0, 1.0]},
    {"query_id": "vb", "positive_ids": ["d1"], "positive_ranks": [1], "retrieved_ids": ["d1", "d2", "d3"],
     "retrieved_scores": [3.0, 2.0, 1.0]},
]  # fmt: skip
VAL_SCORES = {"va": {"c1": 0.0, "c2": 10.0, "c3": 0.0}, "vb": {"d1": 1.0, "d2": 0.0, "d3": 2.0}}


def test_choose_weight_by_hand():
    weight, table = choose_weight(VAL_ROWS, VAL_SCORES, 3, rule="best")
    assert weight == 1.5
    assert table["1.5"]["AP_precision"] == pytest.approx(100.0) and table["1"]["R@1"] == pytest.approx(100.0)
    assert table["0"]["R@1"] == pytest.approx(50.0)  # SkyLink alone misses vb
    assert table["2"]["R@1"] == pytest.approx(50.0) and table["100"]["R@1"] == pytest.approx(50.0)  # misses va
    assert table["inf"]["R@1"] == pytest.approx(50.0)  # the retriever's order
    assert choose_weight(VAL_ROWS, VAL_SCORES, 3, grid=(0.0, 0.25), rule="best")[0] == 0.25  # tie at 75: larger W
    # the fused row on the same rows with the chosen W, and its JSON record
    report = evaluate_reranking(VAL_ROWS, VAL_SCORES, 3, fusion_weight=weight, fusion_info={"mode": "auto"})
    assert report.rows["skylink_fused"]["R@1"] == pytest.approx(100.0)
    assert report.rows["skylink"]["R@1"] == pytest.approx(50.0)
    assert report.rows["improvement_fused"]["R@1"] == pytest.approx(50.0)
    assert report.fusion["weight"] == 1.5 and report.fusion["mode"] == "auto" and "z(S)" in report.fusion["formula"]
    assert "+SkyLink fused" in report.format_table()
    with pytest.raises(ValueError, match="re-ranker scores"):
        evaluate_reranking(VAL_ROWS, None, 3, fusion_weight=1.0)


def test_choose_weight_one_standard_error_rule():
    # Two queries: W = 1.5 gets AP_precision [1, 1], the retriever's order (W = inf) [0.5, 1]. The paired
    # differences [0.5, 0] have mean 0.25 and standard error 0.3536 / sqrt(2) = 0.25: inf is within one standard
    # error of the best, so the default rule keeps the retriever's order.
    assert choose_weight(VAL_ROWS, VAL_SCORES, 3)[0] == float("inf")
    # The same two queries four times each: mean 0.25, standard error 0.2673 / sqrt(8) = 0.0945. Every W >= 2
    # ranks as inf does (misses va), so the largest W within one standard error is the best W itself.
    rows = [dict(r, query_id=f"{r['query_id']}{i}") for i in range(4) for r in VAL_ROWS]
    scores = {f"{q}{i}": s for i in range(4) for q, s in VAL_SCORES.items()}
    assert choose_weight(rows, scores, 3)[0] == 1.5
    assert choose_weight(rows, scores, 3, rule="best")[0] == 1.5
    with pytest.raises(ValueError, match="unknown fusion rule"):
        choose_weight(rows, scores, 3, rule="median")


def test_auto_fusion_never_loses_where_skylink_never_helps():
    # SkyLink scores that always put the positive last: no finite W beats the retriever's order, so W = inf and the
    # fused row is exactly the retriever's (strict JSON: the weight is the string "inf").
    bad = {r["query_id"]: {c: (-5.0 if c in r["positive_ids"] else 1.0) for c in r["retrieved_ids"]} for r in VAL_ROWS}
    weight, _ = choose_weight(VAL_ROWS, bad, 3)
    assert weight == float("inf")
    report = evaluate_reranking(VAL_ROWS, bad, 3, fusion_weight=weight, fusion_info={"mode": "auto"})
    assert report.rows["skylink_fused"] == report.rows["retriever"]
    data = json.loads(report.to_json())
    assert data["fusion"]["weight"] == "inf" and "inf (the retriever's order)" in report.format_table()


def test_retriever_only_and_errors():
    report = evaluate_reranking(ROWS, None, top_k=3)
    assert list(report.rows) == ["retriever"]
    with pytest.raises(KeyError, match="q3"):
        evaluate_reranking(ROWS, {"q1": SCORES["q1"], "q2": SCORES["q2"]}, top_k=3)
    with pytest.raises(KeyError, match="x1"):
        evaluate_reranking(ROWS, {**SCORES, "q3": {"pa": 1.0, "pb": 2.0}}, top_k=3)
    with pytest.raises(ValueError):
        evaluate_reranking([], SCORES)


def test_evaluate_on_tiny_model_and_folder(tmp_path):
    from skylink_model.config import SkyLinkConfig
    from skylink_model.model import get_skylink_model
    from skylink_model.testing import make_tiny_qwen2_vl

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=6, m=5)
    tiny = make_tiny_qwen2_vl(tmp_path / "tiny")
    model = get_skylink_model(SkyLinkConfig(base_model=str(tiny), k=4, dtype="float32"), device="cpu")
    report = evaluate(
        model,
        data,
        RETRIEVER_CONFIG,
        "test",
        top_k=4,
        batch_size=3,
        max_queries=4,
        progress=False,
        baseline="prompt",
        max_new_tokens=4,
        json_path=tmp_path / "eval.json",
    )
    assert isinstance(report, EvalReport) and report.num_queries == 4
    assert {"retriever", "skylink", "prompt_baseline", "improvement"} <= set(report.rows)
    assert 0 <= report.extra["prompt_unparsable"] <= 16
    # the retriever row comes from the dataset alone
    import datasets

    rows = datasets.load_dataset(str(data), RETRIEVER_CONFIG, split="test", cache_dir=str(tmp_path / "c"))
    gallery = datasets.load_dataset(str(data), "gallery-toy", split="test", cache_dir=str(tmp_path / "c"))
    assert report.gallery_size == sum(v == "satellite" for v in gallery["view"]) and "R@top1%" in report.metrics
    alone = evaluate_reranking(list(rows)[:4], None, top_k=4, gallery_size=report.gallery_size)
    assert report.rows["retriever"] == pytest.approx(alone.rows["retriever"])
    # fuse="auto" (the default) without validation queries: no fused row, and the JSON says why
    assert "skylink_fused" not in report.rows and "val-fraction" in report.fusion["reason"]
    assert json.loads((tmp_path / "eval.json").read_text())["rows"]["skylink"] == pytest.approx(report.rows["skylink"])


def test_per_query_records_and_file(tmp_path):
    from skylink_model.evaluation import per_query_records, write_per_query

    records = per_query_records(ROWS, SCORES, top_k=3)
    q1, q2, q3 = records
    assert q1["retrieved_ids"] == ["n1", "n2", "p1"] and q1["scores"] == [0.1, 0.2, 3.0]
    assert q1["reranked_ids"] == ["p1", "n2", "n1"] and q1["reranked_positive_ranks"] == [1]
    assert q2["reranked_positive_ranks"] == [8]  # beyond the top-3: the rank stays
    assert q3["reranked_ids"] == ["x1", "pa", "pb"] and q3["reranked_positive_ranks"] == [2, 3, 9]
    assert q1["retrieved_scores"] is None and q1["gt_id"] is None  # the hand-made rows carry neither
    other = {**SCORES, "q1": {"n1": 5, "n2": 0, "p1": 1}}
    fused = per_query_records(ROWS, SCORES, top_k=3, fused_scores_by_query=other)
    assert fused[0]["fused_ids"] == ["n1", "p1", "n2"] and fused[0]["fused_positive_ranks"] == [2]
    assert fused[1]["fused_ids"] == q2["reranked_ids"] and "fused_ids" not in q1
    alone = per_query_records(ROWS, None, top_k=3)
    assert "scores" not in alone[0] and alone[0]["positive_ranks"] == [3]
    path = write_per_query(tmp_path / "pq" / "eval.per_query.jsonl", records)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records and not list(path.parent.glob("*.tmp"))


def test_evaluate_shared_prefix_equals_naive_and_reports_ms_per_query(tmp_path):
    from skylink_model.config import SkyLinkConfig
    from skylink_model.model import get_skylink_model
    from skylink_model.testing import make_tiny_qwen2_vl

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=6, m=5)
    tiny = make_tiny_qwen2_vl(tmp_path / "tiny")
    model = get_skylink_model(SkyLinkConfig(base_model=str(tiny), k=4, dtype="float32", head_init="random"))
    kw = {"top_k": 4, "batch_size": 3, "max_queries": 4, "progress": False, "cache_dir": tmp_path / "c"}
    fast = evaluate(model, data, RETRIEVER_CONFIG, "test", **kw)
    naive = evaluate(model, data, RETRIEVER_CONFIG, "test", shared_prefix=False, **kw)
    assert fast.rows["skylink"] == pytest.approx(naive.rows["skylink"])
    assert fast.extra["shared_prefix"] is True and naive.extra["shared_prefix"] is False
    assert fast.extra["skylink_ms_per_query"] > 0 and naive.extra["skylink_ms_per_query"] > 0
    cache = fast.extra["feature_cache"]
    assert cache["hits"] + cache["misses"] == 16 and cache["misses"] <= 16
    with pytest.raises(ValueError, match="feature_cache_mb"):
        evaluate(model, data, RETRIEVER_CONFIG, "test", feature_cache_mb=-1, **kw)
