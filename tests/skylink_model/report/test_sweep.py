"""``skyrank sweep``: a top-k grid on a tiny demo-like run (one scoring pass), a retraining grid, the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from skylink_model.report.sweep import parse_values, point_name, run_sweep
from tests.skylink_model.test_data import RETRIEVER_CONFIG


def _not_blank(path) -> bool:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 200
        return float(np.asarray(img.convert("L")).std()) > 5.0


def _r1_by_hand(records, k: int) -> float:
    """R@1 after re-ranking the top-k: the arg-max of the scores over the first k candidates is a positive."""
    hits = 0
    for r in records:
        top, scores = r["retrieved_ids"][:k], r["scores"][:k]
        best = max(range(len(top)), key=lambda j: (scores[j], -j))
        hits += top[best] in set(r["positive_ids"])
    return 100.0 * hits / len(records)


def test_top_k_sweep_scores_once_and_matches_the_evaluation(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    result = run_sweep("top_k", "1,2,4", out, data=tiny_run["data"], config=RETRIEVER_CONFIG, run=tiny_run["run"],
                       progress=False)  # fmt: skip
    assert [p.name for p in result.eval_jsons] == ["top_k=1.json", "top_k=2.json", "top_k=4.json"]
    rows = {k: json.loads(p.read_text())["rows"] for k, p in zip((1, 2, 4), result.eval_jsons, strict=True)}
    evaluated = json.loads(tiny_run["eval_json"].read_text())["rows"]
    assert rows[4]["skylink"] == pytest.approx(evaluated["skylink"])  # the reloaded run scores exactly as before
    assert rows[1]["skylink"] == pytest.approx(rows[1]["retriever"])  # re-ranking one candidate changes nothing
    records = [json.loads(line) for line in (out / "top_k=4.per_query.jsonl").read_text().splitlines()]
    for k in (1, 2, 4):
        assert rows[k]["skylink"]["R@1"] == pytest.approx(_r1_by_hand(records, k))
        assert rows[k]["retriever"]["R@1"] == pytest.approx(evaluated["retriever"]["R@1"])
    assert json.loads(result.eval_jsons[1].read_text())["top_k"] == 2
    summary = json.loads(result.summary.read_text())
    assert summary["param"] == "top_k" and [p["value"] for p in summary["points"]] == [1, 2, 4]
    assert result.plot == out / "top_k.png" and _not_blank(result.plot)
    assert "+SkyLink R@1" in result.format_table()

    # A second run reuses the scored points: no model is loaded.
    import skylink_model.model

    def no_model(*a, **k):
        raise AssertionError("the sweep should have reused top_k=4.json")

    monkeypatch.setattr(skylink_model.model.SkyLinkModel, "from_pretrained", no_model)
    again = run_sweep("top_k", [4, 2], out, data=tiny_run["data"], config=RETRIEVER_CONFIG, run=tiny_run["run"],
                      progress=False)  # fmt: skip
    assert json.loads(again.eval_jsons[0].read_text())["rows"] == rows[4]


def test_training_sweep_retrains_one_run_per_value(tiny_run, tmp_path):
    result = run_sweep(
        "labels", "soft,gt-only", tmp_path / "labels", data=tiny_run["data"], config=RETRIEVER_CONFIG,
        run=tiny_run["run"], top_k=3, max_queries=3, train_kwargs={"max_steps": 1}, progress=False,
    )  # fmt: skip
    for value in ("soft", "gt-only"):
        run_dir = tmp_path / "labels" / "runs" / f"labels={value}"
        assert json.loads((run_dir / "skylink_config.json").read_text())["labels"] == value
        report = json.loads((tmp_path / "labels" / f"labels={value}.json").read_text())
        assert report["top_k"] == 3 and report["num_queries"] == 3 and "skylink" in report["rows"]
    assert _not_blank(result.plot)  # names: grouped bars


def test_values_are_checked():
    assert parse_values("top_k", "1, 3,5") == [1, 3, 5]
    assert parse_values("threshold", "0.8,0.9") == [0.8, 0.9]
    assert parse_values("seed", "0,1,2") == [0, 1, 2]
    assert point_name("base_model", "/models/Qwen2-VL-2B-Instruct") == "base_model=Qwen2-VL-2B-Instruct"
    with pytest.raises(ValueError, match="cannot sweep"):
        parse_values("lr", "1e-4")
    with pytest.raises(ValueError, match="int values"):
        parse_values("k", "4,eight")
    with pytest.raises(ValueError, match="repeated"):
        parse_values("k", "4,4")
    with pytest.raises(ValueError, match="needs `run`"):
        run_sweep("top_k", "1,2", "unused", data="x", config=RETRIEVER_CONFIG)


def test_skyrank_sweep_command(tiny_run, tmp_path):
    out = tmp_path / "cli-sweep"
    args = ["sweep", "--data", str(tiny_run["data"]), "--config", RETRIEVER_CONFIG, "--run", str(tiny_run["run"]),
            "--param", "top_k", "--values", "2,3", "--out", str(out), "--device", "cpu", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert (out / "top_k=2.json").is_file() and (out / "top_k.png").is_file() and "plot:" in result.output


def test_seed_sweep_carves_each_runs_validation_and_fuses_on_it(tiny_run, tmp_path):
    import dataclasses

    from skylink_model.config import SkyLinkConfig

    base = dataclasses.replace(SkyLinkConfig.from_pretrained(tiny_run["run"]), val_fraction=0.34)
    run_sweep(
        "seed", "0,1", tmp_path / "seeds", data=tiny_run["data"], config=RETRIEVER_CONFIG, base_config=base,
        top_k=3, train_kwargs={"max_steps": 1}, progress=False,
    )  # fmt: skip
    for seed in (0, 1):
        run_dir = tmp_path / "seeds" / "runs" / f"seed={seed}"
        assert json.loads((run_dir / "skylink_config.json").read_text())["seed"] == seed
        report = json.loads((tmp_path / "seeds" / f"seed={seed}.json").read_text())
        assert "skylink_fused" in report["rows"]  # W chosen on this run's own validation locations
        assert report["fusion"]["validation"]["seed"] == seed


def test_loss_is_one_more_sweep_row(tiny_run, tmp_path):
    from skylink_model.losses import LOSSES

    assert list(LOSSES) == cli.TRAIN_LOSSES
    assert parse_values("loss", "bce,plackett-luce") == ["bce", "plackett-luce"]
    with pytest.raises(ValueError, match="unknown loss"):
        parse_values("loss", "bce,hinge")
    run_sweep(
        "loss", "plackett-luce", tmp_path / "loss", data=tiny_run["data"], config=RETRIEVER_CONFIG,
        run=tiny_run["run"], top_k=3, max_queries=3, train_kwargs={"max_steps": 1}, progress=False,
    )  # fmt: skip
    run_dir = tmp_path / "loss" / "runs" / "loss=plackett-luce"
    assert json.loads((run_dir / "skylink_config.json").read_text())["loss"] == "plackett-luce"
    assert "skylink" in json.loads((tmp_path / "loss" / "loss=plackett-luce.json").read_text())["rows"]
