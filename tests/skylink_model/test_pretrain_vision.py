"""pretrain_vision: a short run on a hand-built SkyRank folder (the loss is tested with the retriever's training)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from skylink_model.pretrain_vision import RECORD_NAME, VisionPretrainConfig, pretrain_vision
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank


def test_pretrain_vision_learns_changes_only_the_vision_tower_and_holds_out_validation(tmp_path):
    from skylink_model.backbones import load_backbone
    from skylink_model.data import load_skyrank_split
    from skylink_model.testing import make_tiny_qwen2_vl

    data = make_tiny_skyrank(tmp_path / "ds", n_locations=8, m=4)
    base = make_tiny_qwen2_vl(tmp_path / "base", initializer_range=0.08)
    cfg = VisionPretrainConfig(
        steps=40, batch_size=8, learning_rate=1e-2, val_fraction=0.25, min_pixels=56 * 56, max_pixels=56 * 56
    )
    out = tmp_path / "pretrained"
    result = pretrain_vision(base, data, RETRIEVER_CONFIG, out, cfg, progress=False)

    # the run's validation locations (same fraction and seed as skyrank train) are not trained on
    _, val_ids = load_skyrank_split(data, RETRIEVER_CONFIG, "train").without_validation(0.25, 0)
    assert len(val_ids) == 2 and result.locations == 6 and result.images == 12
    assert sum(result.losses[-5:]) < 0.8 * sum(result.losses[:5])

    before, after = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("visual." in k for k in changed)
    assert any("merger" in k for k in changed)  # the projection into the language model trains too

    record = json.loads((out / RECORD_NAME).read_text())
    assert record["locations"] == 6 and record["settings"]["steps"] == 40 and "InfoNCE" in record["objective"]
    model, _, spec = load_backbone(out, device="cpu")  # a SkyLink base like any other
    assert spec.shared_vision and model.config.model_type == "qwen2_vl"


def test_pretrain_vision_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="steps >= 1"):
        pretrain_vision(tmp_path, tmp_path, RETRIEVER_CONFIG, tmp_path / "o", VisionPretrainConfig(steps=0))
