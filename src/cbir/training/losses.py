"""Training losses: cross-entropy with label smoothing, supervised contrastive (Khosla et al.
2020) and batch-hard triplet (Hermans et al. 2017) on the L2-normalised embedding, and
distillation from teacher logits; alone or combined with weights. Every term is a batch mean."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cbir.training.train_config import LossWeights


def supervised_contrastive(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over anchors with a positive of -log softmax mass on the anchor's positives."""
    z = F.normalize(embeddings.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positives.sum(1)
    has_positive = count > 0
    if not has_positive.any():
        return embeddings.sum() * 0.0
    positive_sum = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(positive_sum[has_positive] / count[has_positive]).mean()


def batch_hard_triplet(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float
) -> torch.Tensor:
    """For each anchor: its farthest positive against its nearest negative (cosine distance)."""
    z = F.normalize(embeddings.float(), dim=1)
    distance = 1.0 - z @ z.T
    same = labels[:, None] == labels[None, :]
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    hardest_positive = distance.masked_fill(~same | self_mask, float("-inf")).amax(1)
    hardest_negative = distance.masked_fill(same, float("inf")).amin(1)
    valid = torch.isfinite(hardest_positive) & torch.isfinite(hardest_negative)
    if not valid.any():
        return embeddings.sum() * 0.0
    return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(teacher || student) of the temperature-softened distributions, a batch mean
    (the T^2 keeps its gradient on the scale of the cross-entropy's)."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def combined_loss(
    embeddings: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: LossWeights,
    teacher: torch.Tensor | None = None,
) -> torch.Tensor:
    """The weighted sum; `teacher` holds the teachers' logits when distilling."""
    total = logits.new_zeros((), dtype=torch.float32)
    if weights.cross_entropy:
        ce = F.cross_entropy(logits.float(), labels, label_smoothing=weights.label_smoothing)
        total = total + weights.cross_entropy * ce
    if weights.supcon:
        total = total + weights.supcon * supervised_contrastive(
            embeddings, labels, weights.temperature
        )
    if weights.triplet:
        total = total + weights.triplet * batch_hard_triplet(embeddings, labels, weights.margin)
    if weights.distill:
        if teacher is None:
            raise ValueError("a distillation weight needs the teachers' logits")
        total = total + weights.distill * distillation_loss(
            logits, teacher, weights.distill_temperature
        )
    return total
