"""``skyrank bench`` on a tiny build: one row per (config, re-ranker) with the evaluation's metrics and intervals,
the cost per query, resuming from finished rows, the fused row, and the command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from skylink_model.report import bench
from skylink_model.report.bench import RerankerSpec, parse_reranker, run_bench
from skyrank.errors import OptionError, OutputExistsError
from tests.skylink_model.test_data import RETRIEVER_CONFIG

QUERIES, TOP_K = 3, 3


def test_parse_reranker():
    assert parse_reranker("retriever") == RerankerSpec("retriever", "retriever", None)
    assert parse_reranker("skylink:runs/a") == RerankerSpec("skylink", "skylink", "runs/a")
    assert parse_reranker("fused:runs/a") == RerankerSpec("skylink+fused", "fused", "runs/a")
    assert parse_reranker("pl=skylink:C:/runs/b") == RerankerSpec("pl", "skylink", "C:/runs/b")
    assert parse_reranker("pairwise-bubble:Qwen/Qwen2-VL-2B-Instruct").arg == "Qwen/Qwen2-VL-2B-Instruct"
    cases = [("ranker:x", "unknown kind"), ("skylink", "needs a SkyLink run"), ("retriever:x", "no argument"),
             ("a b=pointwise:m", "row name")]  # fmt: skip
    for bad, match in cases:
        with pytest.raises(OptionError, match=match):
            parse_reranker(bad)


@pytest.fixture(scope="module")
def bench_out(tiny_run, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_bench(
            tiny_run["data"], [RETRIEVER_CONFIG],
            ["retriever", f"skylink:{tiny_run['run']}", f"pointwise:{tiny_run['run']}",
             f"pairwise:{tiny_run['run']}", f"bubble=pairwise-bubble:{tiny_run['run']}",
             f"listwise:{tiny_run['run']}"],
            out, top_k=TOP_K, max_queries=QUERIES, progress=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return out, result


def test_rows_hold_the_evaluations_metrics_and_the_cost(tiny_run, bench_out):
    from skylink_model.evaluation import evaluate
    from skylink_model.model import SkyLinkModel

    out, result = bench_out
    rows = {r["row"]: r for r in result.rows[RETRIEVER_CONFIG]}
    assert list(rows) == ["retriever", "skylink", "pointwise", "pairwise", "bubble", "listwise"]
    model = SkyLinkModel.from_pretrained(tiny_run["run"], device="cpu")
    report = evaluate(model, tiny_run["data"], RETRIEVER_CONFIG, top_k=TOP_K, max_queries=QUERIES, progress=False,
                      fuse="none")  # fmt: skip
    for row, key in (("retriever", "retriever"), ("skylink", "skylink")):
        assert rows[row]["metrics"] == pytest.approx({m: report.rows[key][m] for m in bench.METRICS}, abs=1e-4)
        assert rows[row]["ci95"] == {m: report.ci95[key][m] for m in bench.METRICS}
    assert rows["skylink"]["delta_vs_retriever"]["R@1"] == pytest.approx(report.rows["improvement"]["R@1"], abs=1e-4)
    calls = {name: r["cost"]["calls_per_query"] for name, r in rows.items()}
    # k = 3: pointwise and SkyLink judge 3 pairs, all pairs 3 comparisons, one bubble pass 2, listwise 1 generate
    assert calls == {"retriever": 0, "skylink": 3, "pointwise": 3, "pairwise": 3, "bubble": 2, "listwise": 1}
    assert all(r["cost"]["tokens_per_query"] > 0 and r["cost"]["ms_per_query"] > 0
               for name, r in rows.items() if name != "retriever")  # fmt: skip
    assert {n for n, r in rows.items() if r["cost_only"]} == {"pointwise", "pairwise", "bubble", "listwise"}
    assert not rows["skylink"]["zero_shot"] and rows["pairwise"]["reranker"]["calls_per_query"] == "k(k-1)/2"


def test_leaderboard_files(bench_out):
    out, result = bench_out
    board = json.loads((out / "leaderboard.json").read_text())
    assert [r["row"] for r in board["configs"][RETRIEVER_CONFIG]][:2] == ["retriever", "skylink"]
    assert "scores" not in board["configs"][RETRIEVER_CONFIG][1]  # per-query scores stay in the row files
    md = (out / "leaderboard.md").read_text()
    assert md == result.markdown and "| pointwise † (zero-shot) |" in md and "cost, not quality" in md
    assert "R@10" in md and "AP_precision" in md and "calls/q" in md
    with Image.open(out / "leaderboard.png") as img:
        assert img.format == "PNG" and img.width > 600


def test_resumes_from_finished_rows(tiny_run, bench_out, monkeypatch):
    out, result = bench_out
    (out / "rows" / RETRIEVER_CONFIG / "pointwise.json").unlink()
    built = []
    real = bench.build_reranker

    def counting(spec, **kw):
        built.append(spec.name)
        return real(spec, **kw)

    monkeypatch.setattr(bench, "build_reranker", counting)
    names = ["retriever", f"skylink:{tiny_run['run']}", f"pointwise:{tiny_run['run']}"]
    again = run_bench(tiny_run["data"], [RETRIEVER_CONFIG], names, out, top_k=TOP_K, max_queries=QUERIES,
                      progress=False)  # fmt: skip
    assert built == ["pointwise"]
    before = {r["row"]: r["metrics"] for r in result.rows[RETRIEVER_CONFIG]}
    assert {r["row"]: r["metrics"] for r in again.rows[RETRIEVER_CONFIG]} == {k: before[k] for k in ("retriever",
            "skylink", "pointwise")}  # fmt: skip
    with pytest.raises(OutputExistsError, match="other settings"):
        run_bench(tiny_run["data"], [RETRIEVER_CONFIG], ["retriever"], out, top_k=2, max_queries=QUERIES,
                  progress=False)  # fmt: skip


def test_a_row_capped_at_fewer_queries(tiny_run, bench_out, tmp_path):
    """``row_queries``: the capped row is the whole bench's row at that ``max_queries``, and the table says so."""
    out, result = bench_out
    names = ["retriever", f"pointwise:{tiny_run['run']}"]
    capped = run_bench(tiny_run["data"], [RETRIEVER_CONFIG], names, tmp_path / "capped", top_k=TOP_K,
                       max_queries=QUERIES, row_queries={"pointwise": 2}, progress=False)  # fmt: skip
    short = run_bench(tiny_run["data"], [RETRIEVER_CONFIG], names[1:], tmp_path / "short", top_k=TOP_K,
                      max_queries=2, progress=False)  # fmt: skip
    rows = {r["row"]: r for r in capped.rows[RETRIEVER_CONFIG]}
    assert rows["retriever"]["num_queries"] == QUERIES and rows["pointwise"]["num_queries"] == 2
    alone = short.rows[RETRIEVER_CONFIG][0]
    assert rows["pointwise"]["metrics"] == alone["metrics"]
    assert rows["pointwise"]["delta_vs_retriever"] == alone["delta_vs_retriever"]  # paired on its own 2 queries
    assert rows["retriever"]["metrics"] == result.rows[RETRIEVER_CONFIG][0]["metrics"]
    assert "| pointwise † (zero-shot) [2 queries] |" in capped.markdown and "| retriever |" in capped.markdown
    for bad, match in (({"pointwse": 2}, "names no row: pointwse"), ({"pointwise": 0}, "≥ 1")):
        with pytest.raises(OptionError, match=match):
            run_bench(tiny_run["data"], [RETRIEVER_CONFIG], names, tmp_path / "bad", row_queries=bad,
                      progress=False)  # fmt: skip


def test_an_interrupted_row_leaves_no_file(tiny_run, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "_score_rows", boom)
    names = ["retriever", f"pointwise:{tiny_run['run']}"]
    with pytest.raises(KeyboardInterrupt):
        run_bench(tiny_run["data"], [RETRIEVER_CONFIG], names, tmp_path, top_k=TOP_K, max_queries=QUERIES,
                  progress=False)  # fmt: skip
    assert [p.name for p in (tmp_path / "rows" / RETRIEVER_CONFIG).iterdir()] == ["retriever.json"]
    assert not (tmp_path / "leaderboard.json").exists()


def test_fused_row_reuses_skylink_scores_and_chooses_w_on_validation(tiny_qwen2_vl_dir, tiny_run, tmp_path):
    import torch

    from skylink_model.config import SkyLinkConfig
    from skylink_model.data import read_validation
    from skylink_model.evaluation import evaluate
    from skylink_model.model import SkyLinkModel
    from skylink_model.train import train_skylink

    torch.set_num_threads(1)
    config = SkyLinkConfig(base_model=str(tiny_qwen2_vl_dir), k=3, batch_size=1, dtype="float32", val_fraction=0.3,
                           warmup_ratio=0.0, learning_rate=1e-2)  # fmt: skip
    run = tmp_path / "run"
    train_skylink(config, tiny_run["data"], RETRIEVER_CONFIG, out_dir=run, max_steps=2, device="cpu",
                  progress=False, report_to=None)  # fmt: skip
    result = run_bench(tiny_run["data"], [RETRIEVER_CONFIG], [f"skylink:{run}", f"fused:{run}"], tmp_path / "b",
                       top_k=TOP_K, max_queries=QUERIES, progress=False)  # fmt: skip
    fused = result.rows[RETRIEVER_CONFIG][1]
    assert fused["row"] == "skylink+fused" and fused["extra"]["scores_from"] == "the skylink row of the same run"
    report = evaluate(SkyLinkModel.from_pretrained(run, device="cpu"), tiny_run["data"], RETRIEVER_CONFIG,
                      top_k=TOP_K, max_queries=QUERIES, progress=False, fuse="auto",
                      validation=read_validation(run))  # fmt: skip
    assert fused["fusion"]["weight"] == report.fusion["weight"]
    assert fused["metrics"] == pytest.approx({m: report.rows["skylink_fused"][m] for m in bench.METRICS}, abs=1e-4)
    assert fused["cost"]["calls_per_query"] == TOP_K


def test_bench_command(tiny_run, tmp_path):
    args = ["bench", "--data", str(tiny_run["data"]), "--config", RETRIEVER_CONFIG, "--reranker", "retriever",
            "--reranker", f"skylink:{tiny_run['run']}", "--top-k", "2", "--max-queries", "2", "--out",
            str(tmp_path / "b"), "--device", "cpu", "--quiet", "--note", "a tiny build"]  # fmt: skip
    result = CliRunner().invoke(cli.main, [*args, "--row-queries", "skylink=1"])
    assert result.exit_code == 0, result.output
    assert "| skylink [1 query] |" in result.output and "a tiny build" in result.output
    assert "leaderboard:" in result.output
    for bad in ("skylink", "skylink=x"):
        refused = CliRunner().invoke(cli.main, [*args, "--row-queries", bad])
        assert refused.exit_code == 2 and "ROW=N" in refused.output
    bad = CliRunner().invoke(cli.main, [*args[:5], "--reranker", "skylink", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "needs a SkyLink run folder" in bad.output
