"""Table-1 evaluation on a crafted scoring with numbers computed by hand, and evaluate() on a tiny model."""

from __future__ import annotations

import json

import pytest

from skylink_model.evaluation import EvalReport, evaluate, evaluate_reranking, reranked_topk
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
# By hand (Market-1501 trapezoid AP; single positive at rank r: 1 if r = 1 else 1/(2r)):
#   retriever: AP q1 = 1/6, q2 = 1/16, q3 = (1 + 1 + (2/8 + 3/9)/2)/3 = 0.763889; conservative (top-3): 1/6, 0, 1
#   SkyLink:   AP q1 = 1, q2 = 1/16, q3 ranks 2,3,9 = ((0 + 1/2)/2 + (1/2 + 2/3)/2 + (2/8 + 3/9)/2)/3 = 0.375
#              conservative: 1, 0, positions 2,3 = ((0 + 1/2)/2 + (1/2 + 2/3)/2)/2 = 0.416667
RETRIEVER = {"R@1": 100 / 3, "R@5": 200 / 3, "R@10": 100.0, "AP": 33.101852, "AP_conservative": 38.888889}
SKYLINK = {"R@1": 100 / 3, "R@5": 200 / 3, "R@10": 100.0, "AP": 47.916667, "AP_conservative": 47.222222}


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
        assert set(data["rows"][row]) == {"R@1", "R@5", "R@10", "AP", "AP_conservative"}
    assert data["config"] == "toy-cfg" and data["split"] == "test" and data["top_k"] == 3
    assert "Market-1501" in data["ap_conventions"]["AP"] and "A.1" in data["ap_conventions"]["AP_conservative"]
    assert data["protocol"] and data["gallery_protocol"] == "official"
    table = report.format_table()
    assert "Retriever" in table and "+SkyLink" in table and "Improvement" in table and "+14.81" in table


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
    alone = evaluate_reranking(list(rows)[:4], None, top_k=4)
    assert report.rows["retriever"] == pytest.approx(alone.rows["retriever"])
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
