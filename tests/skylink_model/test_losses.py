"""RelationalSoftLabelLoss (SkyLink Eq. 8) against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from skylink_model.losses import RelationalSoftLabelLoss

LN3 = math.log(3.0)  # sigma(ln 3) = 3/4, sigma(-ln 3) = 1/4, sigma(0) = 1/2

# Two groups of k = 3. Per-term BCE, by hand:
#   row 1: S = [0, ln3, -ln3], L = [1, 0.9, 0]
#     -log(1/2) = 0.693147;  -(0.9 log 3/4 + 0.1 log 1/4) = 0.258914 + 0.138629 = 0.397543;  -log(3/4) = 0.287682
#     mean = 1.378372 / 3 = 0.459457
#   row 2: S = [ln3, 0, 0], L = [1, 0, 0.95]
#     -log(3/4) = 0.287682;  -log(1/2) = 0.693147;  -(0.95 log 1/2 + 0.05 log 1/2) = 0.693147
#     mean = 1.673976 / 3 = 0.557992
#   loss = (0.459457 + 0.557992) / 2 = 0.508725
SCORES = torch.tensor([[0.0, LN3, -LN3], [LN3, 0.0, 0.0]])
LABELS = torch.tensor([[1.0, 0.9, 0.0], [1.0, 0.0, 0.95]])


def test_hand_computed_2x3():
    loss = RelationalSoftLabelLoss()(SCORES, LABELS)
    assert loss.item() == pytest.approx(0.508725, abs=1e-5)


def test_mask_averages_over_valid_candidates_only():
    # row 2 with its third candidate masked: (0.287682 + 0.693147) / 2 = 0.490415; loss = (0.459457 + 0.490415) / 2
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss = RelationalSoftLabelLoss()(SCORES, LABELS, mask)
    assert loss.item() == pytest.approx(0.474936, abs=1e-5)
    padded = SCORES.clone()
    padded[1, 2] = 1e6  # a padded slot's value must not matter
    assert RelationalSoftLabelLoss()(padded, LABELS, mask).item() == pytest.approx(loss.item(), abs=1e-6)


def test_one_group_1d_and_chunking_gives_the_same_gradient():
    loss_fn = RelationalSoftLabelLoss()
    s = SCORES[0].clone().requires_grad_(True)
    loss_fn(s, LABELS[0]).backward()
    full = s.grad.clone()
    s.grad = None
    # micro-batches of 2 + 1 candidates, each chunk's mean weighted by len(chunk) / k
    (loss_fn(s[:2], LABELS[0, :2]) * 2 / 3 + loss_fn(s[2:], LABELS[0, 2:]) * 1 / 3).backward()
    assert torch.allclose(s.grad, full, atol=1e-7)
    # d loss / d S_j = (sigma(S_j) - L_j) / k
    expected = (torch.sigmoid(SCORES[0]) - LABELS[0]) / 3
    assert torch.allclose(full, expected, atol=1e-7)


def test_validation_citation_and_config():
    loss_fn = RelationalSoftLabelLoss()
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(SCORES, LABELS[:, :2])
    with pytest.raises(ValueError, match="at least one valid"):
        loss_fn(SCORES, LABELS, torch.tensor([[True, True, True], [False, False, False]]))
    with pytest.raises(ValueError, match="pos_weight"):
        RelationalSoftLabelLoss(pos_weight=0)
    assert "2603.08063" in loss_fn.citation
    assert loss_fn.get_config_dict() == {"pos_weight": None}
    assert "Eq. 8" in RelationalSoftLabelLoss.__doc__
    for section in ("Args:", "References:", "Inputs:", "Relations:", "Example:"):
        assert section in RelationalSoftLabelLoss.__doc__
