from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from skylink_model.model import SkyLinkModel, get_skylink_model
from skylink_model.testing import make_tiny_qwen2_vl
from skyrank.errors import CheckpointMismatchError


@pytest.fixture
def model(tiny_config):
    return get_skylink_model(tiny_config)


def _bce(scores, labels):
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)


def test_only_lora_and_head_are_trainable(model):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "value_head.weight" in trainable
    assert all("lora_" in n for n in trainable - {"value_head.weight"})
    assert model.value_head.weight.dtype == torch.float32 and model.value_head.bias is None


def test_lora_reaches_both_towers(model, images):
    inputs = model.build_pair_inputs(images[:3], images[3:6])
    _bce(model(**inputs), torch.tensor([1.0, 0.0, 0.3])).backward()
    grads = {n: p.grad for n, p in model.lora_parameters().items()}
    vision = [n for n in grads if ".visual." in n]
    language = [n for n in grads if ".language_model." in n]
    assert vision and language
    assert any("attn.qkv" in n for n in vision)
    assert {"q_proj", "k_proj", "v_proj"} <= {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in language}
    for names in (vision, language):
        assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in names)
    assert not any("patch_embed" in n or "merger" in n for n in grads)


def test_lora_vision_off(tiny_config):
    m = get_skylink_model(dataclasses.replace(tiny_config, lora_vision=False))
    assert m.lora_parameters() and not any(".visual." in n for n in m.lora_parameters())


def test_head_init(tiny_config):
    m = get_skylink_model(tiny_config)
    tok = m.processor.tokenizer
    yes, no = (tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    lm_head = m.backbone.get_base_model().lm_head.weight
    assert torch.equal(m.value_head.weight[0], (lm_head[yes] - lm_head[no]).float())
    zero = get_skylink_model(dataclasses.replace(tiny_config, head_init="zero"))
    assert zero.value_head.weight.abs().sum() == 0
    r1 = get_skylink_model(dataclasses.replace(tiny_config, head_init="random", seed=3))
    r2 = get_skylink_model(dataclasses.replace(tiny_config, head_init="random", seed=3))
    assert torch.equal(r1.value_head.weight, r2.value_head.weight)


def test_yes_no_head_is_the_logit_difference(model, images):
    """With LoRA at its zero init, S equals lm_head logit(yes) − logit(no) at the last position."""
    model.eval()
    inputs = model.build_pair_inputs(images[:2], images[2:4])
    tok = model.processor.tokenizer
    yes, no = (tok.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    with torch.no_grad():
        logits = model.backbone.get_base_model()(**inputs, logits_to_keep=1).logits[:, -1]
        assert torch.allclose(model(**inputs), logits[:, yes] - logits[:, no], atol=1e-5)


def test_prompt_layout(model, images):
    inputs = model.build_pair_inputs(images[:2], images[2:4])
    assert set(inputs) >= {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"}
    text = model.processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    q, p, c = text.index("<|vision_start|>"), text.index(model.config.prompt), text.rindex("<|vision_start|>")
    assert q < p < c and text.endswith("<|im_start|>assistant\n")
    assert inputs["attention_mask"][:, -1].all() and not inputs["attention_mask"][:, 0].all()  # left padding


def test_left_padding_batched_equals_single(model, images):
    model.eval()
    with torch.no_grad():
        batched = model(**model.build_pair_inputs(images[:4], images[4:8]))
        pairs = zip(images[:4], images[4:8], strict=True)
        single = torch.cat([model(**model.build_pair_inputs([q], [c])) for q, c in pairs])
        assert torch.allclose(batched, single, atol=1e-5)
        assert torch.allclose(model.score_pairs(images[:4], images[4:8], batch_size=3), batched, atol=1e-5)


def test_right_padding_is_refused(model, images):
    inputs = model.build_pair_inputs(images[:2], images[2:4])
    inputs["attention_mask"] = inputs["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="left-padded"):
        model(**inputs)


def test_inputs_from_processed_images_equal_the_processor(model, images):
    queries, cands = [images[0]] * 4, images[1:5]
    reference = model.build_pair_inputs(queries, cands)
    pq = model.process_images(queries[:1])
    built = model.pair_inputs_from_processed(pq * 4, model.process_images(cands))
    assert set(built) == set(reference) - {"pixel_values"} | {"pixel_values"}
    for key, value in built.items():
        assert torch.equal(value, reference[key]), key


def test_save_and_reload_bit_for_bit(model, images, tmp_path):
    inputs = model.build_pair_inputs(images[:3], images[3:6])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _bce(model(**inputs), torch.tensor([1.0, 0.0, 0.0])).backward()
    opt.step()  # make LoRA B non-zero so the adapter matters
    model.eval()
    with torch.no_grad():
        expected = model(**inputs)
    out = model.save_pretrained(tmp_path / "run")
    for name in ("adapter_config.json", "adapter_model.safetensors", "value_head.safetensors", "skylink_config.json"):
        assert (out / name).is_file()
    saved = json.loads((out / "skylink_config.json").read_text())
    assert saved["base_model"] == model.config.base_model and saved["prompt"] == model.config.prompt
    assert saved["max_pixels"] == 256 * 28 * 28 and saved["min_pixels"] == 4 * 28 * 28
    reloaded = SkyLinkModel.from_pretrained(out)
    with torch.no_grad():
        assert torch.equal(reloaded(**reloaded.build_pair_inputs(images[:3], images[3:6])), expected)


def test_reload_on_a_mismatched_base_names_the_problem(model, tmp_path):
    out = model.save_pretrained(tmp_path / "run")
    narrow = make_tiny_qwen2_vl(tmp_path / "narrow", hidden_size=32)
    with pytest.raises(CheckpointMismatchError, match="hidden size 64.*hidden size 32"):
        SkyLinkModel.from_pretrained(out, base_model=narrow)
    deeper = make_tiny_qwen2_vl(tmp_path / "deeper", num_layers=3)
    with pytest.raises(CheckpointMismatchError, match=r"missing key\(s\).*layers\.2\."):
        SkyLinkModel.from_pretrained(out, base_model=deeper)
    shallower = make_tiny_qwen2_vl(tmp_path / "shallower", num_layers=1)
    with pytest.raises(CheckpointMismatchError, match=r" 0 missing key\(s\).*unexpected key\(s\).*layers\.1\."):
        SkyLinkModel.from_pretrained(out, base_model=shallower)


def test_a_few_steps_lower_the_bce_loss(model, images):
    torch.manual_seed(0)
    inputs = model.build_pair_inputs([images[0]] * 4, images[1:5])
    labels = torch.tensor([1.0, 0.0, 0.95, 0.0])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.eval()  # no dropout: a deterministic comparison
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = _bce(model(**inputs), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.85, losses
