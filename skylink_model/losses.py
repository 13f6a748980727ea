"""The relational-aware soft-label loss of SkyLink (arXiv 2603.08063, Eq. 8).

The loss is kept apart from the model: it takes the value head's scores for the k candidates of each training
group and their labels (Eq. 6–7, built by :func:`skylink_model.data.make_labels`), so it can be tested with
hand-computed numbers and no model at all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SKYLINK_CITATION = """\
@misc{skylink2026,
  title         = {SkyLink},
  year          = {2026},
  eprint        = {2603.08063},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2603.08063}
}"""


class RelationalSoftLabelLoss(nn.Module):
    r"""Binary cross-entropy with logits between the re-ranker's scores and relational soft labels (SkyLink Eq. 8).

    For one training group G_z of k candidates (the ground truth plus the retriever's top-(k−1) hard negatives,
    Eq. 3) with scores S_j = wᵀh_last (the value head's logit) and labels L_j, the loss is

        ℓ = −(1/k) Σ_j [ L_j · log σ(S_j) + (1 − L_j) · log(1 − σ(S_j)) ]

    and the batch loss is the mean of ℓ over the groups. The labels are *relational*: the ground truth gets 1 and a
    negative gets its similarity to the ground truth in the retriever's reference space, sim_j =
    cos(E_r(c_j), E_r(gt)) (Eq. 6), kept only above a threshold T (Eq. 7: L_j = sim_j if sim_j > T else 0). A
    near-duplicate of the ground truth (an overlapping satellite tile) is thus not pushed to 0 as hard as an
    unrelated location.

    Groups shorter than k (a query with fewer mined negatives) are supported with a boolean ``mask``: the mean is
    taken over each group's valid candidates only, so padding never changes the loss.

    Args:
        pos_weight: optional weight of the positive term (as ``torch.nn.BCEWithLogitsLoss``); ``None`` (the
            paper's setting) weighs both terms equally.

    References:
        - SkyLink: `arXiv 2603.08063 <https://arxiv.org/abs/2603.08063>`_, Eq. 3 (training group), Eq. 6–7 (soft
          labels), Eq. 8 (this loss).

    Requirements:
        1. One score per (query, candidate) pair from a pointwise re-ranker (one logit, no sigmoid applied).
        2. Labels in [0, 1], the ground truth's label 1.

    Inputs:
        +---------------------------------+------------------------------------+-------------------------------+
        | scores                          | labels                             | mask (optional)               |
        +=================================+====================================+===============================+
        | ``[B, k]`` logits S_j, float    | ``[B, k]`` L_j in [0, 1] (Eq. 6–7) | ``[B, k]`` bool, True = valid |
        +---------------------------------+------------------------------------+-------------------------------+

    Recommendations:
        - Because the k terms are independent (pointwise BCE), a group may be split into micro-batches of
          candidates and the gradients accumulated: weighting each chunk's mean by ``len(chunk) / k`` gives exactly
          the gradient of the full group (what :func:`skylink_model.train.train_skylink` does).
        - Compute the scores in fp32 (the value head does) so the loss is not quantised by bf16.

    Relations:
        - ``labels="hard"`` (SkyLink's hard-label ablation): L_j = 1 if sim_j > T else 0, i.e. near-duplicates are
          treated as extra positives.
        - ``labels="gt-only"`` (the no-threshold ablation): only the ground truth is positive, every negative gets
          0; the loss becomes plain pointwise BCE as in sentence-transformers' ``BinaryCrossEntropyLoss``.
        - The labels are built by :func:`skylink_model.data.make_labels`; this class does not depend on the mode.

    Example:
        ::

            import torch
            from skylink_model.losses import RelationalSoftLabelLoss

            loss_fn = RelationalSoftLabelLoss()
            scores = torch.tensor([[2.0, 1.5, -1.0], [0.5, -0.5, 0.0]], requires_grad=True)
            labels = torch.tensor([[1.0, 0.93, 0.0], [1.0, 0.0, 0.0]])
            loss = loss_fn(scores, labels)
            loss.backward()
    """

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and pos_weight <= 0:
            raise ValueError(f"{self.__class__.__name__} expects pos_weight > 0, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of Eq. 8, averaged over each group's (valid) candidates, then over the groups.

        Args:
            scores: ``[B, k]`` (or ``[k]`` for one group) logits.
            labels: same shape, in [0, 1].
            mask: same shape, boolean, True where a candidate exists; ``None`` means all valid.

        Returns:
            A scalar tensor (fp32 or the scores' dtype if wider).
        """
        if scores.dim() == 1:
            scores = scores.unsqueeze(0)
            labels = labels.unsqueeze(0)
            mask = mask.unsqueeze(0) if mask is not None else None
        if scores.shape != labels.shape:
            raise ValueError(
                f"{self.__class__.__name__} expects scores and labels of the same shape [B, k], "
                f"got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        if mask is not None and mask.shape != scores.shape:
            raise ValueError(f"mask must have shape {tuple(scores.shape)}, got {tuple(mask.shape)}")
        scores = scores.float()
        labels = labels.to(scores.dtype)
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, dtype=scores.dtype, device=scores.device)
        terms = F.binary_cross_entropy_with_logits(scores, labels, reduction="none", pos_weight=pos_weight)
        if mask is None:
            return terms.mean(dim=1).mean()
        mask = mask.to(dtype=torch.bool, device=scores.device)
        counts = mask.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError("every group needs at least one valid candidate (a mask row is all False)")
        per_group = torch.where(mask, terms, torch.zeros_like(terms)).sum(dim=1) / counts.to(terms.dtype)
        return per_group.mean()

    def get_config_dict(self) -> dict[str, Any]:
        """The loss's parameters, for the model card and the run's config file."""
        return {"pos_weight": self.pos_weight}

    @property
    def citation(self) -> str:
        """BibTeX of the paper that defines this loss."""
        return SKYLINK_CITATION
