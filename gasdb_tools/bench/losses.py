"""The RT-CAN training loss: 0.5 · soft Dice + 0.5 · label-smoothed cross-entropy, per head, summed.

As in the official ``train.py`` [1]_, which uses segmentation-models-pytorch's ``DiceLoss(mode=
'multiclass')`` and ``SoftCrossEntropyLoss(smooth_factor=0.1)`` [2]_:

* **Dice:** softmax of the logits; per class c, ``dice_c = 2 Σ p·y / Σ (p + y)`` over batch and
  pixels (smooth 0; the denominator clamped at eps 1e-7); ``1 - dice_c`` is zeroed for classes
  absent from the batch's ground truth; the loss is the mean over classes.
* **SoftCE:** ``(1 - ε) · NLL + ε · mean_c(-log p_c)``, ε = 0.1, averaged over pixels (equal to
  ``F.cross_entropy(..., label_smoothing=0.1)``).
* **Total:** ``Σ_heads (0.5 · Dice + 0.5 · SoftCE)``.

Pixels labelled ``ignore_index`` (255) are left out of both terms (Gas-DB masks have none, and
then the values equal the official ones). Logits are upcast to float32 (AMP-safe).

RSFNet adds :func:`confidence_loss`, smooth L1 between its per-modality confidence scores and the
saliency pseudo-labels, weighted λ = 0.3 (``TrainConfig.confidence_weight``).

References
----------
.. [1] logic112358/RT-CAN, ``train.py`` and ``loss_hub/loss_join.py`` (``JointLoss``).
.. [2] qubvel-org/segmentation_models.pytorch, ``losses/dice.py``, ``losses/soft_ce.py``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["dice_loss", "soft_cross_entropy", "joint_loss", "total_loss", "confidence_loss"]


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"target must be (N, H, W) = {(logits.shape[0], *logits.shape[2:])} to match the logits, "
                         f"got {tuple(target.shape)}; resize the label with nearest-neighbour first")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-7, smooth: float = 0.0,
              ignore_index: int | None = 255) -> torch.Tensor:
    """Multiclass soft Dice loss (smp ``DiceLoss(mode='multiclass')``).

    Parameters
    ----------
    logits : (N, C, H, W) tensor
        Raw scores.
    target : (N, H, W) integer tensor
        Class indices; ``ignore_index`` pixels are left out.

    Returns
    -------
    0-d tensor
        Mean over classes of ``1 - dice_c`` (0 for classes absent from ``target``).
    """
    _check(logits, target)
    n, c = logits.shape[:2]
    prob = logits.float().log_softmax(dim=1).exp().reshape(n, c, -1)
    y = target.reshape(n, -1).long()
    if ignore_index is not None:
        valid = (y != ignore_index)
        y = y * valid
        prob = prob * valid[:, None]
        onehot = F.one_hot(y, c).permute(0, 2, 1).to(prob.dtype) * valid[:, None]
    else:
        onehot = F.one_hot(y, c).permute(0, 2, 1).to(prob.dtype)
    dims = (0, 2)
    intersection = (prob * onehot).sum(dims)
    cardinality = (prob + onehot).sum(dims)
    dice = (2.0 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    loss = (1.0 - dice) * (onehot.sum(dims) > 0).to(dice.dtype)
    return loss.mean()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, smoothing: float = 0.1,
                       ignore_index: int | None = 255) -> torch.Tensor:
    """Label-smoothed cross-entropy, mean over scored pixels (smp ``SoftCrossEntropyLoss``)."""
    _check(logits, target)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return F.cross_entropy(logits.float(), target.long(), label_smoothing=smoothing,
                           ignore_index=-100 if ignore_index is None else ignore_index)


def joint_loss(logits: torch.Tensor, target: torch.Tensor, *, dice_weight: float = 0.5, ce_weight: float = 0.5,
               smoothing: float = 0.1, ignore_index: int | None = 255) -> torch.Tensor:
    """``dice_weight · Dice + ce_weight · SoftCE`` for one head (the official ``JointLoss``)."""
    return (dice_weight * dice_loss(logits, target, ignore_index=ignore_index)
            + ce_weight * soft_cross_entropy(logits, target, smoothing=smoothing, ignore_index=ignore_index))


def total_loss(heads, target: torch.Tensor, **kwargs) -> torch.Tensor:
    """Sum of :func:`joint_loss` over the heads (a tensor counts as one head)."""
    if isinstance(heads, torch.Tensor):
        heads = [heads]
    if not heads:
        raise ValueError("heads must hold at least one logits tensor")
    return sum(joint_loss(h, target, **kwargs) for h in heads)


def confidence_loss(confidence: torch.Tensor, target: torch.Tensor, *, beta: float = 1.0) -> torch.Tensor:
    """Smooth L1 (``beta`` 1, mean over samples and modalities) between confidence scores and pseudo-labels.

    Parameters
    ----------
    confidence : (N, M) tensor
        Predicted scores in [0, 1] (RSFNet: ``[c_rgb, c_thermal]``).
    target : (N, M) tensor
        Pseudo-labels (RSFNet: saliency IoUs, :func:`gasdb_tools.bench.saliency.confidence_targets`).
    """
    if confidence.shape != target.shape or confidence.ndim != 2:
        raise ValueError(f"confidence and target must both be (N, M), got {tuple(confidence.shape)} and "
                         f"{tuple(target.shape)}")
    return F.smooth_l1_loss(confidence.float(), target.float(), beta=beta)
