"""The ``skyrank`` command stays thin: each command passes its options to one library function, and library errors
become one-line messages with a fix and a distinct exit code."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import cli
from skyrank import errors

COMMANDS = [
    ["build"], ["synth"], ["validate"], ["retriever", "train"], ["retriever", "list"], ["publish"],
    ["publish-model"], ["train"], ["eval"], ["demo"], ["make-tiny-model"], ["table"], ["sweep"], ["show"],
    ["remine"], ["export"], ["export-model"], ["rerank"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli.main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output and "skyrank " + " ".join(command) in result.output.split("Example", 1)[1]


def test_build_passes_its_options_to_build_dataset(monkeypatch, tmp_path):
    import skyrank.build

    seen = {}

    def fake_build_dataset(**kwargs):
        seen.update(kwargs)
        return SimpleNamespace(summary=lambda: "summary-text")

    monkeypatch.setattr(skyrank.build, "build_dataset", fake_build_dataset)
    monkeypatch.chdir(tmp_path)
    Path("w.pth").write_bytes(b"")
    args = [
        "build", "--dataset", "university1652", "--root", str(tmp_path), "--retriever", "sample4geo",
        "--checkpoint", "w.pth", "--top-m", "15", "--splits", "test", "--protocol", "query-ids-only",
        "--direction", "d2s", "--direction", "s2d", "--ids-only", "--out", str(tmp_path / "o"), "--device", "cpu",
        "--index", "ivf", "--quiet",
    ]  # fmt: skip
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "summary-text" in result.output
    assert seen["dataset"] == "university1652" and seen["root"] == tmp_path
    assert seen["checkpoint"] == Path("w.pth") and seen["top_m"] == 15
    assert seen["splits"] == ("test",) and seen["protocol"] == "query-ids-only"
    assert seen["directions"] == ("d2s", "s2d") and seen["with_images"] is False
    assert seen["index"] == "ivf" and seen["device"] == "cpu" and seen["progress"] is False


@pytest.mark.parametrize(
    "error, code",
    [
        (errors.BenchmarkLayoutError("expected test/query_drone under /x; found: foo"), 3),
        (errors.BadImageError("1 image failed to decode: a.jpg", ["a.jpg"]), 4),
        (errors.CheckpointMismatchError("missing keys (1): model.stem.0.weight"), 5),
        (errors.OutputExistsError("out exists"), 6),
    ],
)
def test_library_errors_map_to_messages_and_exit_codes(monkeypatch, error, code):
    import skyrank.build

    def fail(**kwargs):
        raise error

    monkeypatch.setattr(skyrank.build, "build_dataset", fail)
    result = CliRunner().invoke(cli.main, ["build", "--quiet"])
    assert result.exit_code == code
    assert str(error).splitlines()[0] in result.output
    assert "Traceback" not in result.output


def test_build_error_on_a_wrong_layout_is_clear(tmp_path):
    (tmp_path / "not-a-benchmark").mkdir()
    result = CliRunner().invoke(
        cli.main,
        ["build", "--dataset", "university1652", "--root", str(tmp_path / "not-a-benchmark"), "--checkpoint",
         str(tmp_path / "w.pth"), "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "Error:" in result.output


def test_retriever_list_shows_the_registry():
    result = CliRunner().invoke(cli.main, ["retriever", "list"])
    assert result.exit_code == 0
    assert set(result.output.split()) >= {"sample4geo", "mccg", "sdpl", "precomputed"}


def test_train_then_eval_end_to_end_through_the_cli(tmp_path, monkeypatch):
    """``skyrank train`` and ``skyrank eval`` on a tiny SkyRank folder with a tiny offline Qwen2-VL; on the CPU both
    fix glibc's mmap threshold first (skylink_model.cpu_allocator)."""
    import json

    from skylink_model import cpu_allocator

    allocator_calls = []
    real_fix = cpu_allocator.fix_mmap_threshold

    def fix(*args, **kwargs):
        allocator_calls.append(args)
        return real_fix(*args, **kwargs)

    monkeypatch.setattr(cpu_allocator, "fix_mmap_threshold", fix)

    from skylink_model.testing import make_tiny_qwen2_vl
    from tests.skylink_model.test_data import make_tiny_skyrank

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=4, m=4)
    model = make_tiny_qwen2_vl(tmp_path / "tiny")
    config = "toyret-toy-d2s"
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        cli.main,
        ["train", "--data", str(data), "--config", config, "--model", str(model), "--out", str(run), "--k", "3",
         "--batch-size", "2", "--lr", "1e-3", "--max-steps", "2", "--val-fraction", "0.25", "--device", "cpu",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run / "value_head.safetensors").is_file() and (run / "adapter_model.safetensors").is_file()
    assert len(allocator_calls) == 1
    held_out = json.loads((run / "validation.json").read_text())
    assert held_out["num_queries"] == 1 and held_out["split"] == "train" and held_out["seed"] == 0
    report = tmp_path / "eval.json"
    result = runner.invoke(
        cli.main,
        ["eval", "--data", str(data), "--config", config, "--adapter", str(run), "--top-k", "3", "--json",
         str(report), "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(allocator_calls) == 2
    assert "Retriever" in result.output and "+SkyLink" in result.output
    assert "SkyLink:" in result.output and "ms/query" in result.output
    data_json = json.loads(report.read_text())
    rows = data_json["rows"]
    assert set(rows["skylink"]) >= {"R@1", "R@5", "R@10", "R@top1%", "AP", "AP_precision", "AP_conservative"}
    assert rows["retriever"]["R@10"] >= rows["retriever"]["R@1"]
    # --fuse auto (the default): W chosen on the run's held-out training queries, recorded in the JSON
    assert "skylink_fused" in rows and "+SkyLink fused" in result.output
    assert data_json["fusion"]["mode"] == "auto" and data_json["fusion"]["validation"]["num_queries"] == 1
    assert (
        data_json["fusion"]["validation"]["split"] == "train"
        and "retriever" in data_json["fusion"]["validation"]["note"]
    )
    # without --adapter: the retriever row alone
    result = runner.invoke(cli.main, ["eval", "--data", str(data), "--config", config, "--ap", "precision", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Retriever" in result.output and "+SkyLink" not in result.output and "AP(prec)" in result.output
    result = runner.invoke(
        cli.main, ["eval", "--data", str(data), "--config", config, "--adapter", str(run), "--fuse", "heavy"]
    )
    assert result.exit_code != 0 and "--fuse" in result.output


@pytest.mark.parametrize("command", [["train"], ["eval"]])
def test_train_and_eval_offer_the_naive_path(command):
    result = CliRunner().invoke(cli.main, [*command, "--help"])
    assert result.exit_code == 0 and "--no-shared-prefix" in result.output


def test_train_passes_every_ablation_knob_and_help_lists_the_paper_values(monkeypatch, tmp_path):
    """Table 5 / ablation knobs reach SkyLinkConfig (saved as the run's skylink_config.json) and train_skylink."""
    import skylink_model.train

    seen = {}

    def fake_train(config, data, data_config, **kw):
        seen.update(config=config, kw=kw)
        return SimpleNamespace(steps=0, wall_time_s=0.0, final_loss=0.0, out_dir=kw["out_dir"])

    monkeypatch.setattr(skylink_model.train, "train_skylink", fake_train)
    result = CliRunner().invoke(
        cli.main,
        ["train", "--data", str(tmp_path), "--config", "toyret-toy-d2s", "--out", str(tmp_path / "run"),
         "--lora-dropout", "0.1", "--no-lora-vision",
         "--head-init", "zero", "--prompt", "Same place?", "--warmup-ratio", "0.1", "--lr-scheduler", "cosine",
         "--weight-decay", "0.01", "--lora-targets", "q_proj,v_proj", "--max-grad-norm", "5", "--batch-size", "8",
         "--mixed-precision", "bf16", "--log-every", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    c = seen["config"]
    assert (c.lora_dropout, c.lora_vision, c.head_init, c.prompt) == (0.1, False, "zero", "Same place?")
    assert (c.warmup_ratio, c.lr_scheduler, c.weight_decay, c.max_grad_norm) == (0.1, "cosine", 0.01, 5.0)
    assert (c.lora_targets, c.batch_size) == (["q_proj", "v_proj"], 8)
    assert seen["kw"]["mixed_precision"] == "bf16" and seen["kw"]["log_every"] == 3
    text = " ".join(CliRunner().invoke(cli.main, ["train", "--help"]).output.split())
    for expected in ("LoRA dropout (paper 0.05)", "(paper: yes; ablation: no)", "paper 16", "paper 32", "paper 1e-4",
                     "(paper: not stated; 0.03)", "(paper: not stated; linear)", "(paper: not stated; 0)",
                     "in total, over all processes (paper 4 on 2 GPUs)", "Does the given query image match"):
        assert expected in text, expected
