from __future__ import annotations

import pytest
import torch

from skylink_model.backbones import BACKBONE_DEFAULTS, get_backbone_spec, load_backbone, resolve_dtype
from skyrank.errors import UnknownNameError

from .conftest import make_image


def test_table_covers_the_four_families():
    assert set(BACKBONE_DEFAULTS) == {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision"}
    for spec in BACKBONE_DEFAULTS.values():
        assert {"q_proj", "k_proj", "v_proj"} <= set(spec.lora_targets)
        assert "proj" not in spec.lora_targets
    assert "qkv" in BACKBONE_DEFAULTS["qwen2_vl"].lora_targets


def test_unknown_family_lists_the_supported_ones():
    with pytest.raises(UnknownNameError, match="llava_onevision.*qwen2_5_vl.*qwen2_vl.*qwen3_vl"):
        get_backbone_spec("gpt2")


def test_resolve_dtype_on_cpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_load_tiny_folder(tiny_qwen2_vl_dir):
    model, processor, spec = load_backbone(tiny_qwen2_vl_dir, dtype="float32")
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2VLProcessor"
    assert spec is BACKBONE_DEFAULTS["qwen2_vl"]
    assert processor.tokenizer.padding_side == "left"
    assert model.config.text_config.hidden_size == 64
    assert sum(p.numel() for p in model.parameters()) < 300_000
    assert len(processor.tokenizer.encode("yes", add_special_tokens=False)) == 1
    assert len(processor.tokenizer.encode("no", add_special_tokens=False)) == 1


def test_image_budget_is_applied(tiny_qwen2_vl_dir):
    _, processor, _ = load_backbone(tiny_qwen2_vl_dir, dtype="float32", max_pixels=56 * 56)
    out = processor.image_processor(images=[make_image(112, 0)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 4, 4]]  # 4 tokens, capped from 16
    _, processor, _ = load_backbone(tiny_qwen2_vl_dir, dtype="float32")
    out = processor.image_processor(images=[make_image(112, 0)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]
