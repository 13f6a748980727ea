"""`skyrank eval` on a build of each new benchmark (issue 20): the protocol the build records picks the columns.

Runs on the tiny trees and precomputed embeddings of ``tests/skyrank/test_ground_builds.py`` (the benchmark readers'
branch); skipped where that module is absent."""

from __future__ import annotations

import pytest

from skylink_model.evaluation import evaluate

ground = pytest.importorskip("tests.skyrank.test_ground_builds", reason="the new benchmarks' readers are not here")

EXPECTED = {  # benchmark -> (protocol, R@1% definition, extra columns)
    "vigor_same": ("vigor", "floor", ["Hit_Rate"]),
    "vigor_cross": ("vigor", "floor", ["Hit_Rate"]),
    "cvusa": ("cvusa", "floor", []),
    "cvact": ("cvact", "floor", []),
    "cvact_test": ("cvact", "floor", []),
    "denseuav": ("denseuav", "cmc", ["SDM@1", "SDM@3"]),  # top-m 3: SDM@5 and @10 need more retrieved ids
    "university1652_street": ("university1652-street", "cmc", []),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_eval_uses_each_benchmarks_own_evaluator(tmp_path, name):
    from skyrank.benchmarks import get_benchmark
    from skyrank.build import build_dataset
    from skyrank.format import schema

    root, npz = ground._tree_and_embeddings(tmp_path, name)
    directions = get_benchmark(name).directions
    out = build_dataset(dataset=name, root=root, retriever="precomputed", checkpoint=npz, top_m=3,
                        directions=directions, out=tmp_path / "out", progress=False).out  # fmt: skip
    report = evaluate(None, out, schema.retriever_config_name("precomputed", name, "d2s"), "test", progress=False,
                      images_root=root)  # fmt: skip
    protocol, definition, extra = EXPECTED[name]
    assert (report.evaluation_protocol, report.top1_percent_definition) == (protocol, definition)
    assert report.metrics[:4] == ["R@1", "R@5", "R@10", "R@top1%"]
    assert [m for m in report.metrics if m in ("Hit_Rate", "SDM@1", "SDM@3", "SDM@5", "SDM@10")] == extra
    assert ("AP" in report.metrics) == (protocol in ("denseuav", "university1652-street"))
    row = report.rows["retriever"]
    if "Hit_Rate" in extra:
        assert row["Hit_Rate"] >= row["R@1"]  # a positive ranked first is always a hit
    if "SDM@1" in extra:
        assert row["SDM@1"] >= row["R@1"] - 1e-9  # a correct top-1 scores 1
