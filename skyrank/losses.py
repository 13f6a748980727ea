"""Losses shared by the build side and the model side.

:func:`symmetric_infonce` is Sample4Geo's retrieval loss (Deuser et al., ICCV 2023). It trains the retrievers
(:mod:`skyrank.retrievers.train`), and the demo's vision pre-training (:mod:`skylink_model.pretrain_vision`)
applies it to a tiny LVLM's vision tower. The model half may import this module; it may not import the build
pipeline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_infonce(
    drone: torch.Tensor, satellite: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.1
) -> torch.Tensor:
    """Sample4Geo's symmetric InfoNCE over a batch of matching pairs (row i of each input is the same location).

    ``logits = logit_scale * q @ r.T`` with L2-normalised q (drone) and r (satellite); the loss is the mean of the
    cross-entropies (with ``label_smoothing``) of the rows (q → R) and of the columns (r → Q), target = diagonal.
    ``logit_scale`` is ``exp`` of the model's learned ``logit_scale`` parameter (1/tau).
    """
    q = F.normalize(drone.float(), dim=-1)
    r = F.normalize(satellite.float(), dim=-1)
    logits = logit_scale.float() * q @ r.T
    target = torch.arange(len(q), device=q.device)
    return 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    )


__all__ = ["symmetric_infonce"]
