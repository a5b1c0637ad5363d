"""On-line pairing (OLP) loss of I-Net / DC-I-Net (Zhang et al., TPAMI 2020).

For an anchor embedding x_A of identity y in one image of a Siamese pair, a positive x_p is an
embedding of identity y in the *other* image of the pair, and the negatives x_n are the entries
of the dynamic feature dictionary whose identity is not y (unlabelled entries, identity -1,
included)::

    L_OLP = -1/m sum_(A,p) log(e^{s cos(x_A,x_p)} / (e^{s cos(x_A,x_p)} + sum_n e^{s cos(x_A,x_n)}))

over the m (anchor, positive) pairs of the batch. Paper: the gradient flows into x_A only;
no scale is written (s = 1). Ours: s is an argument (config key ``MODEL.REID.OLP_SCALE``).

Only torch is used (no Detectron2).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_reid_inputs

logger = logging.getLogger(__name__)

__all__ = ["olp_loss", "OLPLoss", "masked_logsumexp", "OLP_TERM_WEIGHTS"]

#: How the (anchor, positive) terms of a batch are weighted in the mean, see :func:`olp_loss`.
OLP_TERM_WEIGHTS = ("pair", "anchor", "identity")


def masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log(sum_j mask[i, j] * exp(logits[i, j]))``; ``-inf`` for a row with no entry.

    The gradient is finite everywhere (zero for rows without entries), unlike a plain
    ``logsumexp`` over a row of ``-inf``.

    Args:
        logits: ``[A, K]`` float.
        mask: ``[A, K]`` bool, the entries to sum over.

    Returns:
        ``[A]`` float.
    """
    has_any = mask.any(dim=1)
    filled = logits.masked_fill(~mask, float("-inf"))
    # Rows without any entry get finite dummies, whose result is discarded just below.
    filled = torch.where(has_any[:, None], filled, torch.zeros_like(filled))
    lse = torch.logsumexp(filled, dim=1)
    return torch.where(has_any, lse, torch.full_like(lse, float("-inf")))


def olp_loss(
    embeds: Tensor,
    pids: Tensor,
    image_ids: Tensor,
    dict_feats: Tensor,
    dict_pids: Tensor,
    scale: float,
    term_weight: str = "pair",
) -> tuple[Tensor, dict[str, float | Tensor]]:
    """OLP loss of one batch of Siamese pairs.

    Images ``2k`` and ``2k+1`` of the batch form pair ``k``: the partner image of an embedding
    from image ``i`` is ``i ^ 1``. Anchors are the labelled embeddings (pid >= 0) having at least
    one positive, an embedding of the same pid in the partner image. There is one term per
    (anchor, positive) pair::

        term = -log(e^{s a.p} / (e^{s a.p} + sum_n e^{s a.n}))
             = softplus(logsumexp_n(s a.n) - s a.p)

    with negatives ``n`` = dictionary entries whose pid differs from the anchor's (entries with
    pid -1 are negatives; entries with pid <= -2, empty slots, are ignored). The loss is the mean
    of the terms, weighted by ``term_weight``:

    * ``"pair"``: every (anchor, positive) term weighs 1 (the formula as written), so a person with
      ``n_A`` proposals in one image and ``n_B`` in the other weighs ``2 n_A n_B`` terms;
    * ``"anchor"``: every anchor weighs 1 (its terms share it equally);
    * ``"identity"``: every identity of every pair weighs 1 (its terms share it equally).

    The positive and the dictionary are detached: the gradient flows into the
    anchors only. Embeddings are expected L2-normalised, so ``cos(a, b) = a.b``.

    Special cases: with an empty dictionary every term is ``-log(1) = 0``; with no anchor having
    a positive the loss is zero but connected to the graph (so that DistributedDataParallel sees
    every parameter used).

    Every shape is fixed by N and K (dense ``[N, N]`` and ``[N, K]`` masks; empty dictionary
    slots, pid -2, are masked out), so on a GPU nothing here waits for the device.

    Computed in float32 whatever the input dtype.

    Args:
        embeds: ``[N, D]`` L2-normalised embeddings of the batch's foreground proposals.
        pids: ``[N]`` long, identity 0..C-1, or -1 for an unlabelled person.
        image_ids: ``[N]`` long, index in the batch of each embedding's image.
        dict_feats: ``[K, D]`` dictionary embeddings (K may be 0).
        dict_pids: ``[K]`` long dictionary identities.
        scale: s > 0, the scale of the cosine similarities.
        term_weight: ``"pair"``, ``"anchor"`` or ``"identity"`` (above).

    Returns:
        loss: 0-dim float32 tensor.
        stats: ``num_terms`` (m), ``num_anchors``, ``pos_sim`` (mean a.p over the terms) and
            ``neg_sim`` (mean a.n over the anchors' negatives): 0-dim float32 tensors left on
            the device; the means are NaN when undefined.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if term_weight not in OLP_TERM_WEIGHTS:
        raise ValueError(f"term_weight must be one of {OLP_TERM_WEIGHTS}, got {term_weight!r}")
    check_reid_inputs(embeds, pids, image_ids)
    if dict_feats.dim() != 2 or dict_feats.shape[1] != embeds.shape[1]:
        raise ValueError(
            f"dict_feats must be [K, {embeds.shape[1]}], got {tuple(dict_feats.shape)}"
        )
    if dict_pids.shape != dict_feats.shape[:1]:
        raise ValueError(f"dict_pids must be [{dict_feats.shape[0]}], got {tuple(dict_pids.shape)}")

    x = embeds.float()
    labelled = pids >= 0
    # Dense over the batch: an [N, N] mask of the (anchor, positive) terms and an [N, K] mask of
    # the negatives, so that no shape depends on the data (nothing waits for the device).
    same_pid = labelled[:, None] & (pids[:, None] == pids[None, :])  # [N, N]
    pos_mask = same_pid & (image_ids[None, :] == (image_ids[:, None] ^ 1))  # j: a positive of i
    pos_count = pos_mask.sum(dim=1).to(x.dtype)  # [N] positives of each row
    is_anchor = pos_count > 0
    num_terms = pos_count.sum()
    sim = x @ x.detach().t()  # [N, N]; the positives are detached

    d = dict_feats.detach().to(device=x.device, dtype=x.dtype)  # [K, D]
    dp = dict_pids.to(device=x.device)
    neg_mask = (dp[None, :] != pids[:, None]) & (dp[None, :] >= -1) & is_anchor[:, None]  # [N, K]
    neg_sim = x @ d.t()  # [N, K]
    lse_neg = masked_logsumexp(scale * neg_sim, neg_mask)  # [N], -inf without negatives
    # softplus(-inf) = 0 with a zero gradient: a term without negatives is -log(1) = 0.
    terms = F.softplus(lse_neg[:, None] - scale * sim)  # [N, N], used where pos_mask
    if term_weight == "pair":
        weight = pos_mask.to(x.dtype)
    elif term_weight == "anchor":  # an anchor's terms share its weight 1
        weight = pos_mask / pos_count.clamp(min=1)[:, None]
    else:  # one group per (identity, pair of images): its terms share the weight 1
        same_group = same_pid & ((image_ids[:, None] // 2) == (image_ids[None, :] // 2))
        group_terms = same_group.to(x.dtype) @ pos_count  # [N] terms of each row's group
        weight = pos_mask / group_terms.clamp(min=1)[:, None]
    # The weights sum to the number of terms, anchors or groups: >= 1 when there is a term. No
    # term: 0 / 1, zero but connected to the graph (DistributedDataParallel sees every parameter).
    loss = (weight * terms).sum() / weight.sum().clamp(min=1.0)

    with torch.no_grad():  # statistics stay on the device (no host synchronisation)
        stats = {
            "num_terms": num_terms,
            "num_anchors": is_anchor.sum().to(x.dtype),
            # 0 / 0 = NaN without any term / negative
            "pos_sim": (sim * pos_mask).sum() / num_terms,
            "neg_sim": (neg_sim * neg_mask).sum() / neg_mask.sum(),
        }
    return loss, stats


class OLPLoss(nn.Module):
    """Module wrapper of :func:`olp_loss` (no parameters, no state).

    Args:
        scale: s > 0, the scale of the cosine similarities. Ours (the paper writes none, i.e.
            s = 1): a config key, default 10 (temperature 0.1 as in OIM).
        term_weight: weighting of the terms in the mean (:func:`olp_loss`; ours: config key).
    """

    def __init__(self, scale: float = 10.0, term_weight: str = "pair"):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if term_weight not in OLP_TERM_WEIGHTS:
            raise ValueError(f"term_weight must be one of {OLP_TERM_WEIGHTS}, got {term_weight!r}")
        self.scale = float(scale)
        self.term_weight = term_weight

    def forward(self, *inputs: Tensor) -> tuple[Tensor, dict[str, float | Tensor]]:
        """``olp_loss(embeds, pids, image_ids, dict_feats, dict_pids)`` with this module's scale and
        term weighting; see :func:`olp_loss` for the arguments and the outputs."""
        return olp_loss(*inputs, self.scale, self.term_weight)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, term_weight={self.term_weight}"
