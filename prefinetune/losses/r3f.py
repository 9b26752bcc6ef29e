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

In bf16 (the default on GPU) an embedding value keeps about 3 significant digits, so noise far below a
value's rounding step is lost when it is added: on MiniLM's embeddings sigma = 1e-5 changes about 5% of
the values (fp16: about a third; fp32: all). `noise_survival` measures that fraction on the model's own
embeddings, and the trainer prints `low_precision_note` when most of the noise would be lost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sym_kl", "embedding_noise", "noise_survival", "low_precision_note"]


def sym_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p||q) + KL(q||p) of the softmax distributions over the last dim, averaged over the other dims
    (only where `mask` is True, when given); computed in fp32."""
    p, q = F.log_softmax(p_logits.float(), dim=-1), F.log_softmax(q_logits.float(), dim=-1)
    per_row = ((p.exp() - q.exp()) * (p - q)).sum(dim=-1)          # = KL(p||q) + KL(q||p)
    if mask is None:
        return per_row.mean()
    return per_row[mask].mean()


def embedding_noise(shape, dtype, device, sigma: float, kind: str, generator: torch.Generator | None = None):
    """z ~ N(0, sigma^2) or U(-sigma, sigma), the perturbation of the input embeddings."""
    if kind == "normal":
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).mul_(sigma).to(dtype)
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=device, dtype=torch.float32).mul_(2 * sigma) \
            .sub_(sigma).to(dtype)
    raise ValueError(f"unknown R3F noise {kind!r}; known: normal, uniform")


def noise_survival(embeddings: torch.Tensor, sigma: float, kind: str, dtype: torch.dtype,
                   rows: int = 4096, seed: int = 0) -> float:
    """The fraction of embedding values that adding R3F noise changes once both are in `dtype`, measured on
    `rows` rows of an embedding matrix [V, H] drawn with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(embeddings.shape[0], (min(rows, embeddings.shape[0]),), generator=generator)
    x = embeddings.detach()[pick.to(embeddings.device)].float().cpu().to(dtype)
    z = embedding_noise(x.shape, dtype, torch.device("cpu"), sigma, kind, generator)
    return float(((x + z) != x).float().mean())


def low_precision_note(embeddings: torch.Tensor, r3f, dtype: torch.dtype, threshold: float = 0.5) -> str | None:
    """A warning when R3F's noise would mostly vanish in `dtype` (see the module docstring), else None."""
    if not r3f.enabled or dtype == torch.float32:
        return None
    kept = noise_survival(embeddings, r3f.sigma, r3f.noise, dtype)
    if kept >= threshold:
        return None
    return (f"R3F noise sigma={r3f.sigma:g} changes only {kept:.0%} of the input embedding values in "
            f"{str(dtype).replace('torch.', '')}: the rest is below their rounding step and lost. "
            "Raise r3f.sigma, or train in fp32 (deepspeed.precision: fp32)")
