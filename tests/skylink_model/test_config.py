from __future__ import annotations

import json

import pytest

from skylink_model.config import CONFIG_NAME, DEFAULT_PROMPT, SkyLinkConfig


def test_defaults_follow_the_paper():
    cfg = SkyLinkConfig()
    assert (cfg.k, cfg.threshold, cfg.labels) == (13, 0.9, "soft")
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_vision) == (16, 32, 0.05, True)
    assert (cfg.learning_rate, cfg.batch_size, cfg.epochs) == (1e-4, 4, 1)
    assert cfg.prompt == DEFAULT_PROMPT == "Does the given query image match the following reference image?"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 1}, "`k` must be ≥ 2, got 1"),
        ({"threshold": 0.0}, "`threshold` must be in (0, 1], got 0.0"),
        ({"threshold": 1.5}, "`threshold` must be in (0, 1], got 1.5"),
        ({"labels": "fuzzy"}, "`labels` must be one of soft, hard, gt-only, got 'fuzzy'"),
        ({"lora_r": 0}, "`lora_r` must be ≥ 1, got 0"),
        ({"lora_dropout": 1.0}, "`lora_dropout` must be in [0, 1), got 1.0"),
        ({"lora_targets": ["q_proj", "proj"]}, "bare 'proj'"),
        ({"head_init": "ones"}, "`head_init` must be one of yes-no, zero, random, got 'ones'"),
        ({"dtype": "int8"}, "`dtype` must be one of"),
        ({"min_pixels": 100, "max_pixels": 10}, "`min_pixels` (100) must be ≤ `max_pixels` (10)"),
        ({"batch_size": 0}, "`batch_size` must be ≥ 1, got 0"),
        ({"prompt": " "}, "`prompt` must be a non-empty string"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError) as info:
        SkyLinkConfig(**kwargs)
    assert message in str(info.value)


def test_lora_targets_accepts_a_comma_list():
    assert SkyLinkConfig(lora_targets="q_proj, v_proj").lora_targets == ["q_proj", "v_proj"]


def test_json_round_trip(tmp_path):
    cfg = SkyLinkConfig(base_model="some/folder", k=8, labels="hard", lora_targets=["q_proj", "qkv"], max_pixels=12544)
    path = cfg.save_pretrained(tmp_path)
    assert path.name == CONFIG_NAME
    assert json.loads(path.read_text())["k"] == 8
    assert SkyLinkConfig.from_pretrained(tmp_path) == cfg


def test_unknown_keys_are_named(tmp_path):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"k": 5, "colour": "blue"}))
    with pytest.raises(ValueError, match="colour"):
        SkyLinkConfig.from_pretrained(tmp_path)


def test_missing_file_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="skylink_config.json"):
        SkyLinkConfig.from_pretrained(tmp_path)
