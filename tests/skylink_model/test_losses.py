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


# ---------------------------------------------------------------------------------------------- Plackett–Luce
def test_plackett_luce_gt_only_worked_by_hand():
    from skylink_model.losses import PlackettLuceLoss

    loss = PlackettLuceLoss()(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    # one ranked position: log(e^2 + e^1 + e^0) - 2 = log(1 + e^-1 + e^-2)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-6)
    assert float(loss) == pytest.approx(0.407606, abs=1e-6)
    # n = 1 is the softmax cross-entropy of the ground truth (index 0)
    ce = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]))
    assert float(loss) == pytest.approx(float(ce), abs=1e-6)


def test_plackett_luce_soft_labels_rank_the_near_duplicate_second():
    from skylink_model.losses import PlackettLuceLoss

    loss = PlackettLuceLoss()(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.95, 0.0]))
    # π = (gt, near-duplicate, negative): [log(1 + e + 1) - 0] + [log(e + 1) - 1]
    expected = math.log(2 + math.e) + math.log(1 + math.exp(-1))
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(loss) == pytest.approx(1.551445 + 0.313262, abs=1e-5)


def test_plackett_luce_order_ties_mask_and_batch():
    from skylink_model.losses import PlackettLuceLoss

    pl = PlackettLuceLoss()
    # labels given out of order: the ranking follows the labels, not the positions
    a = pl(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.95, 1.0, 0.0]))
    b = pl(torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.95, 0.0]))
    assert float(a) == pytest.approx(float(b), abs=1e-6)
    # the unlabelled tail is unordered: permuting it changes nothing; a constant shift changes nothing
    s = torch.tensor([0.3, -1.0, 2.0, 0.5])
    lab = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert float(pl(s, lab)) == pytest.approx(float(pl(s[[0, 3, 1, 2]], lab)), abs=1e-6)
    assert float(pl(s + 7.0, lab)) == pytest.approx(float(pl(s, lab)), abs=1e-5)
    # padding leaves every sum: [2, 1, pad] = log(e^2 + e^1) - 2
    masked = pl(torch.tensor([[2.0, 1.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[True, True, False]]))
    assert float(masked) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # the batch loss is the mean over groups
    both = pl(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.95, 0.0]]))
    assert float(both) == pytest.approx((0.407606 + 1.864707) / 2, abs=1e-5)


def test_plackett_luce_gradient_and_errors():
    from skylink_model.losses import LOSSES, PlackettLuceLoss, make_loss

    scores = torch.tensor([[0.0, 0.0]], requires_grad=True)
    PlackettLuceLoss()(scores, torch.tensor([[1.0, 0.0]])).backward()
    # d/dS of log(e^S0 + e^S1) - S0 at 0: softmax - onehot = [-0.5, 0.5]
    assert scores.grad[0].tolist() == pytest.approx([-0.5, 0.5])
    padded = torch.tensor([[0.0, 0.0, 3.0]], requires_grad=True)  # the padding gets no gradient, and no NaN
    PlackettLuceLoss()(padded, torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[True, True, False]])).backward()
    assert padded.grad[0].tolist() == pytest.approx([-0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="label above 0"):
        PlackettLuceLoss()(torch.zeros(1, 3), torch.zeros(1, 3))
    assert set(LOSSES) == {"bce", "plackett-luce"}
    assert not make_loss("plackett-luce").decomposable and make_loss("bce").decomposable
    assert "2505.13731" in make_loss("plackett-luce").citation
    with pytest.raises(ValueError, match="plackett-luce"):
        make_loss("listmle")
    from skylink_model.config import SkyLinkConfig

    with pytest.raises(ValueError, match="loss"):
        SkyLinkConfig(loss="hinge")
