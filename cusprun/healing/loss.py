"""Distillation losses. The teacher is kept as its top-k tokens per position (log-probabilities
at the temperature) plus one bucket for the rest of its mass: the KL over these k+1 outcomes is
exact for the coarsened distributions and never exceeds the full-vocabulary KL."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_kl(student_logits: torch.Tensor, top_ids: torch.Tensor, top_logp: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) on the teacher's top-k tokens and the
    rest bucket, both at `temperature`, times temperature^2 (gradients keep their scale).
    student_logits [b, L, V]; top_ids, top_logp [b, L, k] (teacher log-probs at temperature)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    s_top = s.gather(-1, top_ids.long())
    p_top = top_logp.exp()
    p_rest = (1 - p_top.sum(-1)).clamp_min(0)
    q_rest = (1 - s_top.exp().sum(-1)).clamp_min(1e-12)
    kl = (p_top * (top_logp - s_top)).sum(-1)
    kl = kl + torch.where(p_rest > 1e-9, p_rest * (p_rest.clamp_min(1e-12).log() - q_rest.log()),
                          torch.zeros_like(p_rest))
    return kl.mean() * temperature ** 2


def lm_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of packed blocks (every position but the last predicts)."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())


def teacher_topk(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int32, log-probs float32) of the k most likely tokens at each position, at
    `temperature`: what the teacher cache stores."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return ids.to(torch.int32), vals
