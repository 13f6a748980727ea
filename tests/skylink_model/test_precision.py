"""The value head computes S = wᵀh_last in float32 in every mode (SkyLink, arXiv 2603.08063, Eq. 8 scores).

Modes: plain fp32, ``torch.autocast`` (what ``accelerator.autocast()`` does under bf16 mixed precision), the whole
module cast to bf16/fp16 the way DeepSpeed's engine does (``module.bfloat16()``/``.half()``, value head included).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from skylink_model.evaluation import evaluate
from skylink_model.losses import RelationalSoftLabelLoss
from skylink_model.model import VALUE_HEAD_NAME, SkyLinkModel, get_skylink_model
from tests.skylink_model.conftest import make_image
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank


@pytest.fixture(scope="module")
def skyrank_dir(tmp_path_factory):
    return make_tiny_skyrank(tmp_path_factory.mktemp("precision") / "ds", n_locations=4, m=4)


def _model(tiny_config, **kw) -> SkyLinkModel:
    import dataclasses

    cfg = dataclasses.replace(tiny_config, lora_dropout=0.0, head_init="random", dtype="float32", **kw)
    return get_skylink_model(cfg)


@pytest.mark.parametrize("cast", ["bfloat16", "half"])
def test_deepspeed_style_whole_module_cast_trains_and_evaluates(tiny_config, skyrank_dir, tmp_path, cast):
    """DeepSpeed's engine calls ``module.bfloat16()`` (bf16) or ``module.half()`` (fp16) on the whole model."""
    model = _model(tiny_config)
    getattr(model, cast)()
    assert model.value_head.weight.dtype != torch.float32  # the cast reached the head, as under DeepSpeed
    q, cands = make_image(56, 0), [make_image(56, s) for s in (1, 2, 3)]
    model.train()
    for shared in (True, False):
        scores = model.score_group(q, cands, shared_vision=shared)
        assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    loss = RelationalSoftLabelLoss()(scores.unsqueeze(0), torch.tensor([[1.0, 0.0, 0.0]]))
    loss.backward()
    assert model.value_head.weight.grad is not None and torch.isfinite(model.value_head.weight.grad.float()).all()
    lora = [p for p in model.lora_parameters().values() if p.grad is not None]
    assert lora, "no LoRA parameter received a gradient"
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()

    report = evaluate(model, skyrank_dir, RETRIEVER_CONFIG, top_k=3, progress=False)
    assert report.to_dict()  # a full evaluation ran on the cast model

    model.save_pretrained(tmp_path / "run")
    assert load_file(str(tmp_path / "run" / VALUE_HEAD_NAME))["value_head.weight"].dtype == torch.float32


def test_head_is_fp32_under_autocast_and_train_eval_agree(tiny_config):
    model = _model(tiny_config)
    q, cands = make_image(56, 0), [make_image(84, s) for s in (1, 2, 3, 4)]
    with torch.no_grad():
        model.eval()
        reference = model.score_group(q, cands)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.randn(2, model.hidden_size, dtype=torch.bfloat16)
            assert model.head_scores(h).dtype == torch.float32
            trained = model.score_group(q, cands)
    assert reference.dtype == trained.dtype == torch.float32
    assert not torch.equal(reference, trained)  # autocast really ran the backbone in bf16
    # bf16 keeps 8 significant bits: the backbone's rounding moves S by about 2^-8 of its scale.
    scale = float(reference.abs().max()) + 1.0
    assert torch.allclose(reference, trained, atol=0.03 * scale, rtol=0.0), (reference, trained)
    assert model.value_head.weight.dtype == torch.float32


def test_reloaded_run_keeps_an_fp32_head_on_a_bf16_backbone(tiny_config, tmp_path):
    model = _model(tiny_config)
    model.save_pretrained(tmp_path / "run")
    reloaded = SkyLinkModel.from_pretrained(tmp_path / "run", dtype="bfloat16")
    assert next(reloaded.backbone.parameters()).dtype == torch.bfloat16
    assert reloaded.value_head.weight.dtype == torch.float32
    assert torch.equal(reloaded.value_head.weight, model.value_head.weight)
    scores = reloaded.score_pairs([make_image(56, 0)], [make_image(56, 1)])
    assert scores.dtype == torch.float32
