"""``skyrank demo``'s learning check and console summary, on hand-made eval JSONs (the full demo is a CPU run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrank.demo import DEMO_BENCHMARK, DEMO_SETTINGS, DEMO_STEPS, DemoResult, demo_check


def _report(skylink_r1: float, ci: list[float], fused: dict[str, float] | None = None) -> dict:
    rows = {
        "retriever": {"R@1": 35.0, "R@5": 70.0, "R@10": 90.0, "AP": 45.0, "AP_precision": 50.0},
        "skylink": {"R@1": skylink_r1, "R@5": 60.0, "R@10": 90.0, "AP": 25.0, "AP_precision": 33.0},
    }
    if fused is not None:
        rows["skylink_fused"] = fused
    return {"rows": rows, "ci95": {"skylink": {"R@1": ci}}}


def test_demo_check_by_hand():
    # random order of the top-10: R@10 / 10 = 9.0; learning needs the CI's low end >= 13.5
    check = demo_check(_report(18.0, [14.0, 22.0]))
    assert check["random_top10_R@1"] == 9.0 and check["learns"] and check["ci_low_over_random"] == 1.56
    assert "fused_not_worse" not in check
    assert not demo_check(_report(15.0, [13.0, 17.0]))["learns"]
    fused_ok = {"R@1": 35.5, "AP": 45.0, "AP_precision": 50.2}
    assert demo_check(_report(18.0, [14.0, 22.0], fused_ok))["fused_not_worse"]
    fused_bad = {"R@1": 36.0, "AP": 44.9, "AP_precision": 51.0}  # loses on the Market-1501 AP
    assert not demo_check(_report(18.0, [14.0, 22.0], fused_bad))["fused_not_worse"]


def test_demo_settings_are_a_step_budget_and_hold_out_validation():
    assert isinstance(DEMO_STEPS, int) and DEMO_STEPS > 0
    assert DEMO_SETTINGS["val_fraction"] > 0  # the fused row's weight needs validation queries
    from skylink_model.config import SkyLinkConfig

    SkyLinkConfig(base_model="x", **DEMO_SETTINGS)  # every demo setting is a valid config field


def test_summary_names_wall_cpu_load_and_the_verdict():
    report = _report(18.0, [14.0, 22.0], {"R@1": 35.5, "AP": 45.0, "AP_precision": 50.2})
    report["extra"] = {"demo": {"check": demo_check(report), "timings": {
        "train": {"wall_s": 300.0, "cpu_s": 420.0, "load_avg_1min": [6.0, 7.5]}}}}  # fmt: skip
    text = DemoResult(Path("o"), Path("d"), Path("r"), Path("e"), "", {}, report).summary()
    assert "train 300s / 420s (load 7.5)" in text
    assert "R@1 18.00 (95% CI 14.00-22.00)" in text and "clearly learns" in text and "9.00" in text
    assert "not worse than the retriever on R@1 and AP: True" in text


def test_run_demo_end_to_end_on_a_tiny_build(tmp_path, monkeypatch):
    """The demo's pipeline (pre-train the vision tower, train, evaluate, check) on a tiny build, a few steps each."""
    import json

    import torch

    from skylink_model.pretrain_vision import RECORD_NAME
    from skyrank.benchmarks.synthetic import generate_synthetic
    from skyrank.build import build_dataset
    from skyrank.demo import run_demo
    from skyrank.retrievers import create

    root = generate_synthetic(tmp_path / "bench", locations=8, distractors=4, views=2, image_size=32, progress=False)
    torch.manual_seed(0)
    ckpt = tmp_path / "atto.pth"
    torch.save(create("sample4geo", arch="convnext_atto", image_size=32, random_weights=True).model.state_dict(), ckpt)
    data = tmp_path / "ds"
    build_dataset(root=root, checkpoint=ckpt, arch="convnext_atto", image_size=32, out=data, top_m=5, progress=False)

    from skyrank import demo as demo_module

    # the tiny build has fewer test queries than the demo's caps: cap the pairwise row lower to see one bind
    monkeypatch.setattr(demo_module, "DEMO_LEADERBOARD_ROW_QUERIES", {"listwise": 128, "pairwise": 3})
    result = run_demo(
        tmp_path / "demo", dataset=data, max_steps=3, pretrain_steps=3, settings={"val_fraction": 0.25},
        progress=False, report=False,
    )  # fmt: skip
    demo = result.report["extra"]["demo"]
    assert demo["pretrain_steps"] == 3 and demo["steps"] == 3 and set(demo["timings"]) == {
        "build", "pretrain", "train", "eval", "train_pl", "leaderboard"}  # fmt: skip
    # the leaderboard: one row per method on the same queries; SkyLink's row is the evaluation's, the PL run's
    # config records its loss, the zero-shot rows are flagged cost-only
    board = json.loads(result.leaderboard.read_text())["configs"]["sample4geo-synthetic-d2s"]
    rows = {r["row"]: r for r in board}
    assert list(rows) == ["retriever", "skylink-bce", "skylink-pl", "skylink-bce+fused", "listwise", "pointwise",
                          "pairwise"]  # fmt: skip
    assert {r["num_queries"] for r in board if r["row"] != "pairwise"} == {result.report["num_queries"]} != {3}
    assert rows["pairwise"]["num_queries"] == 3
    assert "| pairwise † (zero-shot) [3 queries] |" in result.leaderboard_markdown
    assert rows["skylink-bce"]["metrics"]["R@1"] == pytest.approx(result.report["rows"]["skylink"]["R@1"], abs=1e-3)
    assert rows["skylink-bce+fused"]["metrics"]["R@1"] == pytest.approx(
        result.report["rows"]["skylink_fused"]["R@1"], abs=1e-3)  # fmt: skip
    assert json.loads((tmp_path / "demo" / "run-pl" / "skylink_config.json").read_text())["loss"] == "plackett-luce"
    assert {n for n, r in rows.items() if r["cost_only"]} == {"listwise", "pointwise", "pairwise"}
    # the build keeps the top-5: pointwise and SkyLink judge 5 pairs, all pairs 5·4/2 = 10 comparisons
    calls = {n: r["cost"]["calls_per_query"] for n, r in rows.items()}
    assert calls == {"retriever": 0, "skylink-bce": 5, "skylink-pl": 5, "skylink-bce+fused": 5, "listwise": 1,
                     "pointwise": 5, "pairwise": 10}  # fmt: skip
    assert "cost, not quality" in result.leaderboard_markdown
    pretrained = tmp_path / "demo" / "tiny-qwen2-vl-pretrained"
    record = json.loads((pretrained / RECORD_NAME).read_text())
    assert record["settings"]["steps"] == 3 and record["locations"] == 6  # 8 training locations, 2 held out
    config = json.loads((result.run / "skylink_config.json").read_text())
    assert config["base_model"] == str(pretrained) and config["batch_size"] == DEMO_SETTINGS["batch_size"]
    assert {"retriever", "skylink", "skylink_fused"} <= set(result.report["rows"])
    assert "learns" in demo["check"] and "fused_not_worse" in demo["check"]
    assert result.report["fusion"]["validation"]["rule"] == "one-se"
    assert result.report["gallery_protocol"] == "official"  # from the build's manifest (skyrank build --protocol)

    # The folder now holds this recipe: another one is refused before any work (its run would not match), the
    # same one reuses the trained run.
    from skyrank.demo import RECIPE_NAME
    from skyrank.errors import OutputExistsError

    recipe = json.loads((tmp_path / "demo" / RECIPE_NAME).read_text())
    assert recipe["steps"] == 3 and recipe["pretrain_steps"] == 3 and recipe["benchmark"] == DEMO_BENCHMARK
    with pytest.raises(OutputExistsError, match="changed: steps") as refused:
        run_demo(tmp_path / "demo", dataset=data, max_steps=4, pretrain_steps=3, settings={"val_fraction": 0.25},
                 progress=False, report=False)  # fmt: skip
    assert "--overwrite" in (refused.value.hint or "")
    weights = result.run / "value_head.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_demo(
        tmp_path / "demo", dataset=data, max_steps=3, pretrain_steps=3, settings={"val_fraction": 0.25},
        progress=False, report=False, max_eval_queries=4,
    )  # fmt: skip
    assert weights.stat().st_mtime_ns == before and again.report["num_queries"] == 4
    # a folder from an earlier version of the demo (no recipe file) is refused too
    old = tmp_path / "old-demo"
    (old / "run").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="earlier version"):
        run_demo(old, dataset=data, max_steps=3, progress=False, report=False)
