"""SkyLink's training losses: the relational soft-label BCE (arXiv 2603.08063, Eq. 8) and GeoRanker's listwise
Plackett–Luce loss, chosen by name (:data:`LOSSES`, :func:`make_loss`; ``skyrank train --loss``).

The losses are kept apart from the model: they take the value head's scores for the k candidates of each training
group and their labels (Eq. 6–7, built by :func:`skylink_model.data.make_labels`), so they can be tested with
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

    #: Eq. 8 is a mean of per-candidate terms, so a group's chunks may be scored apart and their gradients summed.
    decomposable = True

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


GEORANKER_CITATION = """\
@inproceedings{jia2025georanker,
  title         = {GeoRanker: Distance-Aware Ranking for Worldwide Image Geolocalization},
  author        = {Jia, Pengyue and Park, Seongheon and Gao, Song and Zhao, Xiangyu and Li, Sharon},
  booktitle     = {NeurIPS},
  year          = {2025},
  eprint        = {2505.13731},
  archivePrefix = {arXiv}
}"""


class PlackettLuceLoss(nn.Module):
    r"""The listwise Plackett–Luce loss over a group's scores (GeoRanker, NeurIPS'25), the ground truth first.

    The group's candidates are ranked by their labels, highest first (the ground truth, label 1, at the top; ties
    keep the group's order, so the ground truth stays first and near-duplicates follow in retriever order). With π
    that order, S the value head's logits and n the number of candidates with a label above 0, the loss is the
    negative log-likelihood of the top-n of π under the Plackett–Luce model:

        ℓ = −Σ_{i=1}^{n} log [ exp(S_{π_i}) / Σ_{j=i}^{k} exp(S_{π_j}) ]
          =  Σ_{i=1}^{n} [ log Σ_{j≥i} exp(S_{π_j}) − S_{π_i} ]

    and the batch loss is the mean of ℓ over the groups. Candidates labelled 0 are not ranked among themselves
    (they stay in every denominator): GeoRanker orders all its candidates by geographic distance, but SkyRank's
    groups carry a similarity only above the threshold T (Eq. 7), so the tail below T has no order to learn. With
    ``labels="gt-only"`` (n = 1) the loss is the softmax cross-entropy of the ground truth against its k−1 hard
    negatives (FlagEmbedding's group loss); with soft labels it also ranks the near-duplicates above the rest.

    Unlike Eq. 8 the terms are not independent per candidate, so a group is scored in one pass
    (:attr:`decomposable` is False: :func:`skylink_model.train.train_skylink` does not split the group's candidates
    into chunks for this loss; the shared-prefix path still chunks inside its single call).

    References:
        - GeoRanker: `arXiv 2505.13731 <https://arxiv.org/abs/2505.13731>`_ (listwise Plackett–Luce ranking loss
          of an LVLM + value head).
        - Plackett (1975), Luce (1959); ListMLE (Xia et al., ICML 2008) is the full-permutation case.

    Inputs:
        ``scores`` ``[B, k]`` logits, ``labels`` ``[B, k]`` in [0, 1] (the ground truth's label > 0), optional
        ``mask`` ``[B, k]`` bool (True = valid; padding leaves every sum).

    Example:
        ::

            loss = PlackettLuceLoss()(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
            # = log(e^2 + e^1 + e^0) - 2 = 0.4076
    """

    decomposable = False

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ℓ above, averaged over the groups (a scalar, fp32)."""
        if scores.dim() == 1:
            scores, labels = scores.unsqueeze(0), labels.unsqueeze(0)
            mask = mask.unsqueeze(0) if mask is not None else None
        if scores.shape != labels.shape:
            raise ValueError(
                f"{self.__class__.__name__} expects scores and labels of the same shape [B, k], "
                f"got {tuple(scores.shape)} and {tuple(labels.shape)}"
            )
        if mask is not None and mask.shape != scores.shape:
            raise ValueError(f"mask must have shape {tuple(scores.shape)}, got {tuple(mask.shape)}")
        scores = scores.float()
        labels = labels.to(device=scores.device, dtype=scores.dtype)
        valid = (torch.ones_like(scores, dtype=torch.bool) if mask is None
                 else mask.to(device=scores.device, dtype=torch.bool))  # fmt: skip
        ranked = valid & (labels > 0)
        if bool((~ranked.any(dim=1)).any()):
            raise ValueError("every group needs a candidate with a label above 0 (the ground truth)")
        # π: labels descending, stable (the ground truth first); padding last, out of every sum.
        key = torch.where(valid, labels, torch.full_like(labels, -1.0))
        order = torch.sort(key, dim=1, descending=True, stable=True).indices
        s = torch.gather(torch.where(valid, scores, torch.full_like(scores, float("-inf"))), 1, order)
        tail = torch.logcumsumexp(s.flip(1), dim=1).flip(1)  # log Σ_{j ≥ i} exp(S_{π_j})
        terms = torch.where(torch.gather(ranked, 1, order), tail - s, torch.zeros_like(s))
        return terms.sum(dim=1).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {}

    @property
    def citation(self) -> str:
        return GEORANKER_CITATION


#: ``--loss`` name → loss class (one call signature: ``loss(scores, labels, mask=None)``).
LOSSES: dict[str, type[nn.Module]] = {"bce": RelationalSoftLabelLoss, "plackett-luce": PlackettLuceLoss}


def make_loss(name: str) -> nn.Module:
    """The training loss named ``name`` (:data:`LOSSES`); ``ValueError`` naming the choices otherwise."""
    if name not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name]()
