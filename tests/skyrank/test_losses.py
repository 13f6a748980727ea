"""skyrank.losses: Sample4Geo's symmetric InfoNCE, by hand."""

from __future__ import annotations

import torch

from skyrank.losses import symmetric_infonce


def test_symmetric_infonce_matches_hand_computation() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(10.0)
    logits = scale * q @ r.T
    rows = torch.nn.functional.cross_entropy(logits, torch.arange(2), label_smoothing=0.1)
    cols = torch.nn.functional.cross_entropy(logits.T, torch.arange(2), label_smoothing=0.1)
    assert torch.allclose(symmetric_infonce(q, r, scale, 0.1), (rows + cols) / 2)
    # manual: row 0 = [10, 6]; smoothed target (0.95, 0.05)
    lse = torch.logsumexp(torch.tensor([10.0, 6.0]), 0)
    row0 = -(0.95 * (10 - lse) + 0.05 * (6 - lse))
    lse1 = torch.logsumexp(torch.tensor([0.0, 8.0]), 0)
    row1 = -(0.05 * (0 - lse1) + 0.95 * (8 - lse1))
    assert torch.allclose(rows, (row0 + row1) / 2)
