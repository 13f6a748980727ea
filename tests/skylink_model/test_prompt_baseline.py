"""The listwise prompt baseline (SkyLink appendix A.8): prompt, inputs, and a parser that survives bad output."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from skylink_model.prompt_baseline import (
    build_listwise_inputs,
    build_listwise_prompt,
    parse_listwise_scores,
    score_listwise,
)


def test_prompt_names_every_candidate():
    prompt = build_listwise_prompt(3)
    assert "Candidate 1: <score>" in prompt and "Candidate 3: <score>" in prompt and "Candidate 4" not in prompt
    assert "0 to 10" in prompt


def test_prompt_names_the_views_of_the_direction():
    d2s, s2d = build_listwise_prompt(3, "d2s"), build_listwise_prompt(3, "s2d")
    assert "drone-view query" in d2s and "satellite-view candidates" in d2s
    assert "satellite-view query" in s2d and "drone-view candidates" in s2d
    assert build_listwise_prompt(3) == d2s
    with pytest.raises(ValueError, match="s2d"):
        build_listwise_prompt(3, "sideways")


def test_parse_good_output():
    text = "Candidate 1: 7\nCandidate 2: 3.5\nCandidate 3: 10\nCandidate 4: 0"
    assert parse_listwise_scores(text, 4) == ([7.0, 3.5, 10.0, 0.0], 0)


def test_parse_variants_and_order():
    text = "Here you go:\n**Candidate 2**: 8/10\ncandidate #1 = 4\nCandidate 3 - 6.\n"
    assert parse_listwise_scores(text, 3) == ([4.0, 8.0, 6.0], 0)


@pytest.mark.parametrize(
    ("text", "k", "scores", "bad"),
    [
        ("", 3, [0.0, 0.0, 0.0], 3),  # nothing
        ("I cannot judge these images.", 2, [0.0, 0.0], 2),  # junk
        ("Candidate 1: 5\nCandidate 3: 2", 3, [5.0, 0.0, 2.0], 1),  # a missing line
        ("Candidate 1: 11\nCandidate 2: -3\nCandidate 3: 4", 3, [0.0, 0.0, 4.0], 2),  # out of range
        ("Candidate 1: 5\nCandidate 1: 9\nCandidate 2: 1", 2, [5.0, 1.0], 0),  # duplicate: first wins
        ("Candidate 7: 9\nCandidate 0: 9\nCandidate 2: 3", 2, [0.0, 3.0], 1),  # index out of range ignored
        ("Candidate 1: high\nCandidate 2: 6", 2, [0.0, 6.0], 1),  # a word instead of a number
        ("Candidate 1: 5 Candidate 2: 6 Candidate 3", 3, [5.0, 6.0, 0.0], 1),  # one line, truncated
        # a malformed line for candidate 10 must not be read as "Candidate 1" + "0"
        ("Candidate 10: N/A\nCandidate 1: 9", 10, [9.0] + [0.0] * 9, 9),
        ("Candidate 12: ?\nCandidate 1: 9\nCandidate 2: 4", 12, [9.0, 4.0] + [0.0] * 10, 10),
        ("Candidate 1:\n9\nCandidate 2: 4", 2, [0.0, 4.0], 1),  # a score must be on its candidate's line
    ],
)
def test_parse_malformed(text, k, scores, bad):
    assert parse_listwise_scores(text, k) == (scores, bad)


def test_inputs_and_generation_on_tiny_model(tiny_qwen):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen)
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen).eval()
    query = Image.new("RGB", (56, 56), (200, 10, 10))
    candidates = [Image.new("RGB", (56, 56), (10 * i, 100, 30)) for i in range(3)]
    inputs = build_listwise_inputs(processor, query, candidates)
    assert int(inputs["image_grid_thw"].shape[0]) == 4  # the query + 3 candidates in one prompt
    image_token = model.config.image_token_id
    n_image_tokens = int((inputs["input_ids"] == image_token).sum())
    assert n_image_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "Candidate 3:" in text and text.rstrip().endswith("assistant")
    torch.manual_seed(0)
    result = score_listwise(model, processor, query, candidates, max_new_tokens=6)
    assert len(result.scores) == 3 and 0 <= result.n_unparsable <= 3  # a random model writes junk: counted
    assert all(0.0 <= s <= 10.0 for s in result.scores)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from skylink_model.testing import make_tiny_qwen2_vl

    return make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen"))
