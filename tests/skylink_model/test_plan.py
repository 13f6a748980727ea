"""``skyrank train/eval --plan``: the plan's numbers worked by hand for the tiny Qwen2-VL, and the CLI prints it before
any work (issue 19, item 4)."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import cli
from skylink_model.plan import (
    GIB,
    GPU_PEAK_FLOPS,
    PlanInputs,
    estimate,
    lm_flops,
    split_queries,
    train_summary,
    vision_flops,
)
from skylink_model.published_configs import PUBLISHED_CONFIGS, published_config

# The tiny Qwen2-VL of skylink_model.testing: text 64 wide, 2 layers, 4 heads / 2 KV heads (head 16), MLP 128;
# vision 32 wide, 2 blocks, 2 heads, MLP ratio 2, patch 14, merge 2, output 64.
TINY_TEXT = SimpleNamespace(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                            num_hidden_layers=2)  # fmt: skip


def test_lm_flops_by_hand():
    # per token per layer: 2 x (q 64x64 + k,v 2 x 64x32 + o 64x64 + MLP 3 x 64x128) = 2 x 36,864 = 73,728
    # attention of 10 new tokens, no past: 4 x 64 x (10 x 11 / 2) = 14,080 per layer
    assert lm_flops(TINY_TEXT, 10) == 2 * (10 * 73_728 + 14_080)
    # 3 new tokens after 5 cached: attention 4 x 64 x (3 x 5 + 3 x 4 / 2) = 5,376 per layer
    assert lm_flops(TINY_TEXT, 3, 5) == 2 * (3 * 73_728 + 5_376)


def test_vision_flops_by_hand(tiny_qwen2_vl_dir):
    from transformers import AutoConfig

    vc = AutoConfig.from_pretrained(tiny_qwen2_vl_dir).vision_config
    n = 64  # a 112 px image: (112 / 14)^2 patches
    embed = 2 * (3 * 2 * 14 * 14) * 32 * n  # the Conv3d patch embedding as a matmul
    blocks = 2 * (2 * (4 * 32 * 32 + 2 * 2 * 32 * 32) * n + 4 * n * n * 32)
    merger = (n // 4) * 2 * (128 * 128 + 128 * 64)  # 4 patches merged: 128 -> 128 -> 64
    assert vision_flops(vc, n) == embed + blocks + merger


def test_plan_of_the_tiny_model_by_hand(tiny_qwen2_vl_dir):
    plan = estimate(PlanInputs(model=str(tiny_qwen2_vl_dir), k=4, batch_size=4, num_gpus=2, zero_stage=2,
                               dtype="float32", image_size=112, train_queries=1000, utilisation=0.5))  # fmt: skip
    # LoRA r = 16 on language q (64->64), k, v (64->32) in 2 layers and vision qkv (32->96) in 2 blocks
    lora = 2 * 16 * ((64 + 64) + 2 * (64 + 32)) + 2 * 16 * (32 + 96)
    assert plan.params["lora"] == lora == 14_336
    assert plan.params["trainable"] == lora + 64  # + the value head
    # 112 px -> 64 patches -> 16 tokens per image; the pair = 2 images + 38 text tokens
    assert plan.tokens["image_tokens_per_image"] == 16
    assert plan.tokens["pair_tokens"] == 2 * 16 + 38
    assert plan.tokens["group_tokens_naive"] == 4 * 70
    assert plan.tokens["group_tokens_fast"] == plan.tokens["prefix_tokens"] + 4 * plan.tokens["continuation_tokens"]
    # weights: every frozen parameter in fp32; LoRA state with ZeRO-2 over 2 GPUs: 4 + (4 + 8) / 2 bytes each
    assert plan.memory_gib["weights"] == pytest.approx(plan.params["frozen"] * 4 / GIB, abs=1e-4)
    assert plan.memory_gib["lora_state"] == pytest.approx((lora + 64) * 10 / GIB, abs=1e-4)
    # checkpointing keeps each layer's input only: less than without
    assert plan.memory_gib["activations_checkpointed"] < plan.memory_gib["activations_full"]
    # training = forward x 3 (backward of the inputs + the checkpointed replay), the fast path on one prefix
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_qwen2_vl_dir)
    tc, vc = config.get_text_config(), config.vision_config
    v = vision_flops(vc, 64, 64)
    prefix, cont = plan.tokens["prefix_tokens"], plan.tokens["continuation_tokens"]
    fast = 5 * v + lm_flops(tc, prefix) + 4 * lm_flops(tc, cont, prefix)
    assert plan.flops["group_fast"] == pytest.approx(3 * fast)
    assert plan.flops["group_naive"] == pytest.approx(3 * 4 * (2 * v + lm_flops(tc, 70)))
    # time per epoch: 1000 groups / (2 GPUs x peak x 0.5)
    seconds = 3 * fast / (2 * GPU_PEAK_FLOPS["H100"] * 0.5)
    assert plan.time["seconds_per_group"]["H100"] == pytest.approx(seconds)
    assert plan.time["hours"]["H100"] == pytest.approx(1000 * seconds / 3600)
    assert plan.time["optimizer_steps"] == 250


def test_loading_and_export_host_memory_by_hand():
    """Loading converts a checkpoint of another precision while its file is mapped; export merges in fp32 from the
    file. Qwen2.5-VL-3B's bf16 checkpoint into fp32 measured 21.8 GiB loading, 22.6 at export (BENCHMARKS.md)."""
    from skylink_model.plan import CHECKPOINT_BYTES_DEFAULT, RUNTIME_GIB, checkpoint_bytes

    inputs = {"model": "Qwen/Qwen2.5-VL-3B-Instruct", "k": 10, "mode": "eval", "device": "cpu", "offline": True}
    fp32 = estimate(PlanInputs(**inputs, dtype="float32"))
    bf16 = estimate(PlanInputs(**inputs, dtype="bfloat16"))
    frozen, total = fp32.params["frozen"], fp32.params["total"]
    file_gib = frozen * CHECKPOINT_BYTES_DEFAULT / GIB  # the built-in configs name no dtype: a 16-bit release
    assert fp32.memory_gib["checkpoint_file"] == pytest.approx(file_gib, abs=1e-4)
    assert fp32.memory_gib["load"] == pytest.approx(frozen * 4 / GIB + file_gib + RUNTIME_GIB["cpu"], abs=1e-3)
    assert bf16.memory_gib["load"] == pytest.approx(frozen * 2 / GIB + RUNTIME_GIB["cpu"], abs=1e-3)  # no copy
    assert fp32.memory_gib["export_merge"] == bf16.memory_gib["export_merge"] == pytest.approx(
        total * 4 / GIB + file_gib + RUNTIME_GIB["cpu"], abs=1e-3)  # fmt: skip
    assert 21.8 / 1.25 <= fp32.memory_gib["load"] <= 21.8 * 1.25 and 22.6 / 1.25 <= fp32.memory_gib["export_merge"]
    assert "converted weights plus the mapped checkpoint file" in fp32.format()
    assert "the mapped file is the weights" in bf16.format()

    class Config:
        dtype = "float32"

    assert checkpoint_bytes(Config()) == 4 and checkpoint_bytes(object()) == CHECKPOINT_BYTES_DEFAULT


def test_train_summary_from_a_loaded_config_and_none_for_an_unreadable_one(tiny_qwen2_vl_dir):
    from transformers import AutoConfig

    inputs = PlanInputs(model="not/read", k=4, batch_size=2, dtype="float32", device="cpu", image_size=112)
    config = AutoConfig.from_pretrained(tiny_qwen2_vl_dir)
    plan = estimate(inputs, config)  # the loaded config: `model` is never looked up
    assert plan.config_source == "the loaded model"
    line = train_summary(config, inputs, steps=7, mixed_precision="no")
    m = plan.memory_gib
    assert line == (
        f"plan: 2 groups per optimizer step, 7 steps, weights in float32, mixed precision no; memory about "
        f"{m['total']:.2f} GiB per device (weights {m['weights']:.2f}, LoRA state {m['lora_state']:.2f}, "
        f"activations {m['activations']:.2f}, runtime {m['runtime']:.2f})"
    )
    # a family the plan does not know (a text-only config): nothing, not an error
    assert train_summary(AutoConfig.for_model("gpt2"), inputs, steps=7) is None
    assert train_summary(config, PlanInputs(dtype="int8"), steps=7) is None


def test_published_configs_hold_the_published_shapes():
    shapes = {"Qwen/Qwen2-VL-2B-Instruct": (1536, 28, 12, 2), "Qwen/Qwen2-VL-7B-Instruct": (3584, 28, 28, 4),
              "Qwen/Qwen2.5-VL-3B-Instruct": (2048, 36, 16, 2), "Qwen/Qwen3-VL-2B-Instruct": (2048, 28, 16, 8),
              "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": (896, 24, 14, 2)}  # fmt: skip
    assert set(shapes) == set(PUBLISHED_CONFIGS)
    for model_id, (hidden, layers, heads, kv) in shapes.items():
        tc = published_config(model_id).get_text_config()
        assert (tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads, tc.num_key_value_heads) == (
            hidden, layers, heads, kv), model_id  # fmt: skip
    assert published_config("Qwen/Qwen3-VL-2B-Instruct").vision_config.deepstack_visual_indexes == [5, 11, 17]


def test_the_paper_anchor_is_reproduced_offline():
    """Qwen2-VL-7B, University-1652 D2S, k = 13, naive pairs, checkpointing, 2 x A100: about 13 h per epoch."""
    plan = estimate(PlanInputs(model="Qwen/Qwen2-VL-7B-Instruct", num_gpus=2, train_queries=37854,
                               shared_prefix=False, offline=True))  # fmt: skip
    assert plan.config_source == "built-in published config"
    assert plan.tokens["image_tokens_per_image"] == 196  # 384 px -> 392 px -> 14 x 14
    assert 11 < plan.time["hours"]["A100-80G"] < 15
    assert plan.params["frozen"] == pytest.approx(8.29e9, rel=0.01)


def test_split_sizes_from_a_local_manifest_or_the_known_benchmark(tmp_path):
    config = "sample4geo-university1652-d2s"
    assert split_queries("alice/skyrank", config, "train") == 37854
    assert split_queries("alice/skyrank", "sample4geo-sues200-150-d2s", "train") is None
    manifest = {"format_version": 2, "m": 10, "files": {},
                "tables": [{"config": config, "split": "train", "rows": 123, "gallery": 45},
                           {"config": config, "split": "test", "rows": 67, "gallery": 89}]}  # fmt: skip
    (tmp_path / "skyrank_manifest.json").write_text(json.dumps(manifest))
    assert split_queries(str(tmp_path), config, "train") == 123
    assert split_queries(str(tmp_path), config, "test") == 67
    assert split_queries(str(tmp_path), config, "gallery") == 89


def _no_work(monkeypatch):
    import skylink_model.backbones
    import skylink_model.evaluation
    import skylink_model.train

    def refuse(*args, **kwargs):
        raise AssertionError("--plan must not load a model or data")

    monkeypatch.setattr(skylink_model.train, "train_skylink", refuse)
    monkeypatch.setattr(skylink_model.evaluation, "evaluate_run", refuse)
    monkeypatch.setattr(skylink_model.backbones, "load_backbone", refuse)


def test_train_plan_prints_and_exits_before_any_work(monkeypatch, tiny_qwen2_vl_dir):
    _no_work(monkeypatch)
    result = CliRunner().invoke(cli.main, [
        "train", "--data", "alice/skyrank", "--config", "sample4geo-university1652-d2s", "--model",
        str(tiny_qwen2_vl_dir), "--plan", "--k", "4", "--plan-gpus", "2", "--plan-zero-stage", "2",
        "--plan-image-size", "112", "--gradient-checkpointing"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SkyLink training plan" in result.output
    assert "0.01 M trainable" in result.output and "16 per image at 112 px" in result.output
    assert "37854 queries" in result.output and "A100-80G" in result.output and "H100" in result.output


def test_train_without_plan_still_needs_out(monkeypatch, tiny_qwen2_vl_dir):
    _no_work(monkeypatch)
    result = CliRunner().invoke(cli.main, ["train", "--data", "alice/skyrank", "--config",
                                           "sample4geo-university1652-d2s", "--model", str(tiny_qwen2_vl_dir)])
    assert result.exit_code == 2 and "--out" in result.output


def test_eval_plan_offline_uses_the_built_in_config(monkeypatch):
    _no_work(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli.main, [
        "eval", "--data", "alice/skyrank", "--config", "sample4geo-university1652-d2s", "--plan",
        "--plan-model", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SkyLink scoring plan" in result.output and "built-in published config" in result.output
    assert "730 per image" in result.output and "37855 queries" in result.output


def test_plan_on_the_cpu_names_the_allocator_setting_it_assumes(monkeypatch, tiny_qwen2_vl_dir):
    """``--device cpu`` plans the CPU process; on glibc without the setting it says what the estimate assumes."""
    _no_work(monkeypatch)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    args = ["train", "--data", "alice/skyrank", "--config", "sample4geo-university1652-d2s", "--model",
            str(tiny_qwen2_vl_dir), "--plan", "--k", "4"]  # fmt: skip
    cpu = CliRunner().invoke(cli.main, [*args, "--device", "cpu"])
    gpu = CliRunner().invoke(cli.main, args)
    assert cpu.exit_code == 0 and gpu.exit_code == 0, cpu.output + gpu.output
    assert "runtime 1.00" in cpu.output and "runtime 0.60" in gpu.output
    if sys.platform.startswith("linux"):
        assert "MALLOC_MMAP_THRESHOLD_=1048576" in cpu.output
    assert "MALLOC_MMAP_THRESHOLD_" not in gpu.output
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert "MALLOC_MMAP_THRESHOLD_" not in CliRunner().invoke(cli.main, [*args, "--device", "cpu"]).output
