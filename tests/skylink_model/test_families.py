"""Every backbone family of SkyLink (arXiv 2603.08063, Table 4: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision)
is built offline by ``skyrank make-tiny-model --family``, loads through the hub path, trains and evaluates."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import cli
from skylink_model.backbones import get_backbone_spec, load_backbone
from skylink_model.config import SkyLinkConfig
from skylink_model.model import SkyLinkModel, get_skylink_model, pair_template_text
from skylink_model.rerank import rerank_query
from skylink_model.testing import FAMILIES
from tests.skylink_model.conftest import make_image
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen3_vl": ("Qwen3VLForConditionalGeneration", "Qwen3VLProcessor"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor"),
}


@pytest.fixture(scope="module")
def skyrank_dir(tmp_path_factory):
    return make_tiny_skyrank(tmp_path_factory.mktemp("families") / "ds", n_locations=4, m=4)


@pytest.mark.parametrize("family", FAMILIES)
def test_make_tiny_model_then_train_and_eval_through_the_cli(family, skyrank_dir, tmp_path):
    runner = CliRunner()
    tiny = tmp_path / "tiny"
    result = runner.invoke(cli.main, ["make-tiny-model", str(tiny), "--family", family])
    assert result.exit_code == 0, result.output
    model, processor, spec = load_backbone(tiny)  # the AutoModelForImageTextToText / AutoProcessor path
    assert (type(model).__name__, type(processor).__name__) == CLASSES[family]
    assert model.config.model_type == family and spec == get_backbone_spec(family)
    assert processor.tokenizer.padding_side == "left" and processor.chat_template

    run = tmp_path / "run"
    result = runner.invoke(
        cli.main,
        ["train", "--data", str(skyrank_dir), "--config", RETRIEVER_CONFIG, "--model", str(tiny), "--out", str(run),
         "--k", "3", "--batch-size", "2", "--lr", "1e-3", "--max-steps", "2", "--log-every", "1", "--device", "cpu",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] == r["loss"] for r in log)
    report = tmp_path / "eval.json"
    result = runner.invoke(
        cli.main,
        ["eval", "--data", str(skyrank_dir), "--config", RETRIEVER_CONFIG, "--adapter", str(run), "--top-k", "3",
         "--json", str(report), "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["rows"]
    assert set(rows["skylink"]) >= {"R@1", "R@5", "R@10", "AP"}
    reloaded = SkyLinkModel.from_pretrained(run)
    assert reloaded.backbone.get_base_model().config.model_type == family


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_onevision"])
def test_group_scores_equal_independent_pair_scores(family, tmp_path):
    """Vision-feature reuse and the shared prefix (every family takes both): the same scores as independent pairs."""
    from skylink_model.testing import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny", family)
    model = get_skylink_model(SkyLinkConfig(base_model=str(tiny), lora_dropout=0.0, head_init="random"))
    model.eval()
    query, cands = make_image(56, 0), [make_image(s, i) for i, s in enumerate((112, 56, 84), start=1)]
    with torch.no_grad():
        group = model.score_group(query, cands)  # the query's vision features reused for every pair
        pairs = torch.cat([model.score_pairs([query], [c]) for c in cands])
    assert torch.allclose(group, pairs, atol=1e-5), (group, pairs)
    fast = rerank_query(model, query, cands)  # the evaluation default: the shared prefix
    assert torch.allclose(fast, pairs, atol=1e-4), (fast, pairs)
    assert model.supports_shared_vision and model.supports_shared_prefix


@pytest.mark.parametrize("family", ["qwen3_vl", "llava_onevision"])
def test_train_on_the_shared_prefix_equals_the_per_pair_path(family, skyrank_dir, tmp_path):
    """`skyrank train`'s default (one prefix forward per group, continuations chunked) vs --no-shared-prefix: the same
    first loss and gradient norm."""
    from skylink_model.testing import make_tiny_model
    from skylink_model.train import train_skylink

    tiny = make_tiny_model(tmp_path / "tiny", family)
    config = SkyLinkConfig(base_model=str(tiny), k=3, batch_size=2, lora_dropout=0.0, max_grad_norm=1e6)
    runs = {
        fast: train_skylink(config, skyrank_dir, RETRIEVER_CONFIG, out_dir=tmp_path / f"run-{fast}", max_steps=1,
                            micro_batch_size=2, shared_prefix=fast, device="cpu", progress=False, report_to=None)
        for fast in (False, True)
    }  # fmt: skip
    assert runs[True].losses[0] == pytest.approx(runs[False].losses[0], abs=1e-6)
    assert runs[True].grad_norms[0] == pytest.approx(runs[False].grad_norms[0], rel=1e-4)


def test_llava_onevision_keeps_the_paper_order_and_the_multi_image_path(tmp_path):
    from skylink_model.testing import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny", "llava_onevision")
    model = get_skylink_model(SkyLinkConfig(base_model=str(tiny), lora_dropout=0.0))
    prompt = model.config.prompt
    # The hub template renders every image first; SkyLink's text keeps <query image> prompt <candidate image>.
    naive = model.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}, {"type": "image"}]}],
        add_generation_prompt=True, tokenize=False,
    )  # fmt: skip
    assert naive.index("<image><image>") < naive.index(prompt)
    text = pair_template_text(model.processor, prompt)
    assert text == model.template_text
    assert text.index("<image>") < text.index(prompt) < text.rindex("<image>")
    assert text.count("<image>") == 2

    big = [make_image(112, 1), make_image((112, 56), 2)]  # larger than the 56-px base: anyres would tile them
    inputs = model.build_pair_inputs([big[0]], [big[1]])
    assert inputs["pixel_values"].shape[1] == 1  # one base-resolution view per image, no anyres tiles
    assert inputs["batch_num_images"].tolist() == [2]
    per_image = model.processor.num_image_tokens + 1  # features + one newline token (multi-image path)
    image_id = model.backbone.get_base_model().config.image_token_id
    assert int((inputs["input_ids"] == image_id).sum()) == 2 * per_image
    single = model.processor(text=["<image>x"], images=[big[0]], return_tensors="pt")
    assert int((single["input_ids"] == image_id).sum()) > per_image  # what the single-image (anyres) path costs
    with torch.no_grad():
        assert torch.isfinite(model(**inputs)).all()
