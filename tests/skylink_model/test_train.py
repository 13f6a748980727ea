"""train_skylink on a tiny offline Qwen2-VL and a hand-built SkyRank folder: learning, chunking, NaN, resume."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from skylink_model.config import SkyLinkConfig
from skylink_model.data import load_skyrank_split
from skylink_model.losses import RelationalSoftLabelLoss
from skylink_model.model import SkyLinkModel, get_skylink_model
from skylink_model.train import (
    TRAINABLE_PARAMS_NAME,
    epoch_order,
    latest_checkpoint,
    make_lr_scheduler,
    train_skylink,
)
from skyrank.errors import OutputExistsError, TrainingError
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from skylink_model.testing import make_tiny_qwen2_vl

    root = tmp_path_factory.mktemp("train")
    data = make_tiny_skyrank(root / "ds", n_locations=4, m=4)
    return {"model": make_tiny_qwen2_vl(root / "tiny"), "data": data}


def _config(tiny, **kw) -> SkyLinkConfig:
    base = {"base_model": str(tiny["model"]), "k": 3, "batch_size": 2, "learning_rate": 2e-2, "warmup_ratio": 0.0}
    base.update(kw)
    return SkyLinkConfig(**base)


def _train(tiny, out, config, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    kw.setdefault("report_to", None)
    return train_skylink(config, tiny["data"], RETRIEVER_CONFIG, out_dir=out, **kw)


def _factors(schedule: str, warmup: int, total: int, at: tuple[int, ...]) -> list[float]:
    """The lr factor the scheduler applies at each optimizer step in ``at`` (stepping it as training does)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_lr_scheduler(opt, schedule, warmup, total)
    seen = []
    for _ in range(max(at) + 1):
        seen.append(round(sched.get_last_lr()[0], 4))
        opt.step()
        sched.step()
    return [seen[s] for s in at]


def test_lr_schedule_and_epoch_order():
    # transformers.get_scheduler: warm-up factor step / warmup (0 at the first step), then decay to 0 at `total`.
    assert _factors("linear", 2, 10, (0, 1, 2, 6, 10)) == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert _factors("cosine", 0, 4, (0, 2, 4)) == [1.0, 0.5, 0.0]
    assert _factors("constant", 2, 10, (0, 1, 2, 9)) == [0.0, 0.5, 1.0, 1.0]
    assert _factors("constant", 0, 10, (0, 9)) == [1.0, 1.0]
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1) != epoch_order(10, 1, 1)
    a, b = epoch_order(10, 0, 1, 0, 2), epoch_order(10, 0, 1, 1, 2)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    with pytest.raises(ValueError):
        make_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "step", 0, 1)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny, tmp_path):
    # batch_size = all 4 groups: every optimizer step sees the same fixed batch, so losses[i] is the loss of that
    # batch after i updates (losses[0]: the untrained model, LoRA B = 0).
    config = _config(tiny, batch_size=4, epochs=4, learning_rate=5e-3, lora_dropout=0.0)
    result = _train(tiny, tmp_path / "run", config, log_every=1, lr_scheduler="constant")
    assert result.steps == result.total_steps == 4 and result.groups_seen == 16
    assert result.losses[-1] < result.losses[0] - 0.02, result.losses
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all("lr" in r and "loss" in r for r in log)
    assert [r["loss"] for r in log] == pytest.approx(result.losses)


def test_accumulated_gradient_is_the_mean_over_groups_and_chunks(tiny, tmp_path):
    """batch_size groups accumulate to the mean loss over groups; micro-batches do not change the gradient."""
    from accelerate.utils import set_seed

    config = _config(tiny, lora_dropout=0.0, max_grad_norm=1e6)  # norm computed (and logged), never clipped
    whole = _train(tiny, tmp_path / "whole", config, max_steps=1)
    chunked = _train(tiny, tmp_path / "chunked", config, max_steps=1, micro_batch_size=1)
    assert chunked.losses[0] == pytest.approx(whole.losses[0], abs=1e-6)
    assert chunked.grad_norms[0] == pytest.approx(whole.grad_norms[0], rel=1e-5)

    # The same step by hand: the mean of Eq. 8 over the step's two groups, one backward.
    split = load_skyrank_split(tiny["data"], RETRIEVER_CONFIG, "train")
    groups = split.groups(k=config.k, threshold=config.threshold, labels=config.labels)
    set_seed(config.seed)
    model = get_skylink_model(dataclasses.replace(config, dtype="float32"), device="cpu")
    model.train()
    loss_fn = RelationalSoftLabelLoss()
    step_groups = [groups[i] for i in epoch_order(len(groups), 0, config.seed)[: config.batch_size]]
    losses = []
    for g in step_groups:
        scores = model.score_group(split.images(g.query_id), split.images.many(g.candidate_ids))
        losses.append(loss_fn(scores, torch.tensor(g.labels)))
    loss = sum(losses) / len(losses)
    loss.backward()
    norm = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters() if p.requires_grad and p.grad is not None])
    )
    assert whole.losses[0] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert whole.grad_norms[0] == pytest.approx(float(norm), rel=1e-4)


def test_shared_prefix_training_equals_the_per_pair_path_in_one_call_per_group(tiny, tmp_path, monkeypatch):
    """Default (shared prefix, continuations chunked) vs --no-shared-prefix: the same loss and gradient norm, and one
    call of the wrapped module per group (what DDP / DeepSpeed see)."""
    calls = {"prefix": 0, "pairs": 0}
    forward = SkyLinkModel.forward

    def counting_forward(self, **inputs):
        calls["prefix" if "prefix_input_ids" in inputs else "pairs"] += 1
        return forward(self, **inputs)

    monkeypatch.setattr(SkyLinkModel, "forward", counting_forward)
    config = _config(tiny, lora_dropout=0.0, max_grad_norm=1e6)
    naive = _train(tiny, tmp_path / "naive", config, max_steps=1, shared_prefix=False)
    assert calls == {"prefix": 0, "pairs": config.batch_size}
    fast = _train(tiny, tmp_path / "fast", config, max_steps=1, micro_batch_size=2)
    assert calls == {"prefix": config.batch_size, "pairs": config.batch_size}
    assert fast.losses[0] == pytest.approx(naive.losses[0], abs=1e-6)
    assert fast.grad_norms[0] == pytest.approx(naive.grad_norms[0], rel=1e-5)


def test_nan_loss_stops_with_step_and_query_ids(tiny, tmp_path, monkeypatch):
    forward = SkyLinkModel.forward

    def nan_forward(self, **inputs):  # inject a NaN to test the detector, not the forward
        return forward(self, **inputs) * float("nan")

    monkeypatch.setattr(SkyLinkModel, "forward", nan_forward)
    with pytest.raises(TrainingError, match=r"non-finite loss.*step 1.*query ids: \['drone/"):
        _train(tiny, tmp_path / "nan", _config(tiny))


def test_checkpoint_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    # 2 steps per epoch, 4 in all; LoRA dropout on (RNG state restored); 2 warm-up steps, so the resumed run's
    # learning rates come from the restored scheduler state (a fresh scheduler would restart at lr 0).
    config = _config(tiny, epochs=2, warmup_ratio=0.5)
    full = _train(tiny, tmp_path / "full", config, save_every=2, log_every=1)
    assert [c.name for c in full.checkpoints] == ["checkpoint-2"]
    ckpt = tmp_path / "full" / "checkpoint-2"
    # accelerate's own state files load with weights_only=True (no unsafe pickles)
    for name in ("optimizer.bin", "scheduler.bin"):
        torch.load(ckpt / name, weights_only=True)
    assert (ckpt / TRAINABLE_PARAMS_NAME).is_file() and (ckpt / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()  # the frozen backbone is never written

    # Simulate an interruption after step 2: only the checkpoint survives.
    (tmp_path / "resumed").mkdir()
    shutil.copytree(ckpt, tmp_path / "resumed" / "checkpoint-2")
    with pytest.raises(OutputExistsError):
        _train(tiny, tmp_path / "resumed", config)
    resumed = _train(tiny, tmp_path / "resumed", config, resume=True, log_every=1)
    assert resumed.resumed_from == tmp_path / "resumed" / "checkpoint-2"
    assert resumed.steps == 4 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(full.losses[2:], abs=1e-5)
    lrs = [[json.loads(line)["lr"] for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]
           for run in ("full", "resumed")]
    # logged after each step: the rate of the next one (warm-up 0, 1e-2, then 2e-2, 1e-2 decaying to 0)
    assert lrs[0] == pytest.approx([1e-2, 2e-2, 1e-2, 0.0]) and lrs[1] == pytest.approx(lrs[0][2:])
    a = load_file(str(tmp_path / "full" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-2"

    # A resumed run with other settings is refused.
    with pytest.raises(TrainingError, match="batch_size"):
        _train(tiny, tmp_path / "resumed", _config(tiny, epochs=2, batch_size=1), resume=True)

    # End to end: the trained run folder evaluates on the test split.
    from skylink_model.evaluation import evaluate

    report = evaluate(
        SkyLinkModel.from_pretrained(tmp_path / "full"),
        tiny["data"],
        RETRIEVER_CONFIG,
        "test",
        top_k=3,
        batch_size=4,
        progress=False,
    )
    assert report.num_queries == 4 and set(report.rows) == {"retriever", "skylink", "improvement"}


def test_plackett_luce_training_step_by_hand_and_on_both_paths(tiny, tmp_path):
    """--loss plackett-luce: the first step's loss is the mean over the step's groups of PlackettLuceLoss on the
    group's scores (computed here by hand from the same model); the per-pair path with micro-batches scores each group
    whole (the loss is not a sum over candidates) and agrees with the shared-prefix path."""
    from accelerate.utils import set_seed

    from skylink_model.losses import PlackettLuceLoss

    config = _config(tiny, lora_dropout=0.0, max_grad_norm=1e6, loss="plackett-luce", labels="soft", threshold=0.5)
    fast = _train(tiny, tmp_path / "fast", config, max_steps=1)
    naive = _train(tiny, tmp_path / "naive", config, max_steps=1, micro_batch_size=1, shared_prefix=False)
    assert naive.losses[0] == pytest.approx(fast.losses[0], abs=1e-6)
    assert naive.grad_norms[0] == pytest.approx(fast.grad_norms[0], rel=1e-5)
    assert json.loads((tmp_path / "fast" / "skylink_config.json").read_text())["loss"] == "plackett-luce"

    split = load_skyrank_split(tiny["data"], RETRIEVER_CONFIG, "train")
    groups = split.groups(k=config.k, threshold=config.threshold, labels=config.labels)
    set_seed(config.seed)
    model = get_skylink_model(dataclasses.replace(config, dtype="float32"), device="cpu")
    step_groups = [groups[i] for i in epoch_order(len(groups), 0, config.seed)[: config.batch_size]]
    with torch.no_grad():
        losses = [
            PlackettLuceLoss()(model.score_group(split.images(g.query_id), split.images.many(g.candidate_ids)),
                               torch.tensor(g.labels))
            for g in step_groups
        ]  # fmt: skip
    assert fast.losses[0] == pytest.approx(float(sum(losses) / len(losses)), rel=1e-5)
    bce = _train(tiny, tmp_path / "bce", dataclasses.replace(config, loss="bce"), max_steps=1)
    assert abs(bce.losses[0] - fast.losses[0]) > 1e-3  # the choice reaches the loop


def test_the_run_prints_its_plan_once_before_the_first_step(tiny, tmp_path, capsys):
    config = _config(tiny)
    result = _train(tiny, tmp_path / "run", config, max_steps=1, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan: ")]
    assert len(lines) == 1
    assert lines[0].startswith(f"plan: 2 groups per optimizer step, {result.total_steps} steps, weights in float32, ")
    assert "GiB per device" in lines[0]
