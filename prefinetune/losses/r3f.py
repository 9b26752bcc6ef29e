"""R3F and R4F (Aghajanyan et al. 2020; Muppet section 3.2): a symmetric-KL penalty between the model's
outputs on clean and on noise-perturbed input embeddings.

    loss = task loss + lambda * symKL(f(x), f(x + z)),  z ~ N(0, sigma^2) or U(-sigma, sigma)

symKL(p, q) = KL(p || q) + KL(q || p), over each family's output distribution: class probabilities,
choice probabilities, start and end distributions (summed), per-token vocabulary distributions
(summarization, averaged over real target tokens). Regression has no distribution: its penalty is the
squared difference of the two outputs. The penalty is a mean over the batch, and the log(n) scaling of
the family divides the whole slot loss, penalty included: (task loss + lambda * symKL) / log(n), so a
family's share of the update does not depend on its n in either term.

The two passes share their dropout masks (the clean one runs under a forked RNG state), so the noise is
the only difference between them and sigma = 0 gives a penalty of exactly 0. R4F adds spectral
normalisation of the heads (prefinetune.model.heads).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sym_kl", "family_sym_kl", "embedding_noise"]


def sym_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p||q) + KL(q||p) of the softmax distributions over the last dim, averaged over the other dims
    (only where `mask` is True, when given); computed in fp32."""
    p, q = F.log_softmax(p_logits.float(), dim=-1), F.log_softmax(q_logits.float(), dim=-1)
    per_row = ((p.exp() - q.exp()) * (p - q)).sum(dim=-1)          # = KL(p||q) + KL(q||p)
    if mask is None:
        return per_row.mean()
    return per_row[mask].mean()


def family_sym_kl(family: str, clean, noisy, batch: dict) -> torch.Tensor:
    """The R3F penalty for one family's outputs (see the module docstring)."""
    if family == "span":
        return sym_kl(clean[0], noisy[0]) + sym_kl(clean[1], noisy[1])
    if family == "summarization":
        return sym_kl(clean, noisy, batch["labels"] != -100)
    if family == "regression":
        return (clean.float() - noisy.float()).pow(2).mean()
    return sym_kl(clean, noisy)


def embedding_noise(shape, dtype, device, sigma: float, kind: str, generator: torch.Generator | None = None):
    """z ~ N(0, sigma^2) or U(-sigma, sigma), the perturbation of the input embeddings."""
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).mul_(sigma).to(dtype)
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=torch.float32).mul_(2 * sigma) \
            .sub_(sigma).to(dtype)
    raise ValueError(f"unknown R3F noise {kind!r}; known: normal, uniform")
