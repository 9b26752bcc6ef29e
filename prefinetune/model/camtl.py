"""CA-MTL's task-conditioned transformer (Pilault, El Hattami & Pal, ICLR 2021; `model.conditioning: camtl`) on a
BERT/RoBERTa-type encoder: a learned embedding z_t per task modulates the pretrained layers through FiLM
functions gamma(z), beta(z), and the bottom layers are frozen.

    conditioning = CamtlConditioning(backbone, tasks=3, spec=recipe.model.camtl, max_length=128)
    conditioning.task = 2          # set by MultiTaskModel before each forward: which z the hooks read
    states = backbone(**inputs).last_hidden_state

The parts (each switchable in the recipe), on the layers above the frozen ones:
- conditional attention: a block-diagonal bias M(z) = (+)_n (A_n gamma_n(z) + beta_n(z)), N blocks of
  L/N positions, added to each conditioned layer's attention scores QK^T / sqrt(d) (a pre-hook adds it to the
  additive attention mask the layer receives);
- conditional alignment: between the embedding layer and the first layer, x -> (x R) gamma(z) + beta(z), R
  the identity at the start;
- conditional layer norm: each conditioned layer's two LayerNorms give (w gamma(z)) x_hat + b + beta(z), w
  and b the pretrained ones (CA-MTL: gamma-hat = gamma' gamma(z) + beta', initialised from the pretrained
  norm);
- conditional bottleneck: after each conditioned layer, h + U act(gamma(z) (D h) + beta(z)) (U zero at start).
Every FiLM function is gamma(z) = 1 + W_g z, beta(z) = W_b z with W zero at the start, so the conditioned
model computes exactly what the pretrained one does until it trains. Where the paper leaves a detail open
(the FiLM parametrisation, N, the bottleneck's width, which layers get which part) these are our choices,
said here and in the README.

The modules are attached by hooks, so the backbone's own parameters, names and saved files stay stock; the
conditioning's parameters live outside it (`conditioning.*`, trained like the heads: a task's embedding
row gets a gradient only when the task runs, and stays bit-identical otherwise). Every task runs the same
hooks on the same tensors (its row of the embedding table), so every rank builds the same graph under ZeRO.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CamtlConditioning", "frozen_layer_count", "encoder_layers"]


SUPPORTED = ("bert", "roberta", "xlm-roberta", "camembert")     # their layouts and masks are the ones hooked here


def encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a BERT/RoBERTa-type model (backbone.encoder.layer), or a ValueError why not."""
    config = backbone.config
    if config.model_type not in SUPPORTED or getattr(config, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        raise ValueError(f"model.conditioning camtl conditions a BERT/RoBERTa-type encoder ({', '.join(SUPPORTED)}, "
                         f"eager or sdpa attention); {config.model_type} with "
                         f"{getattr(config, '_attn_implementation', None)} attention is not one (BART's "
                         "encoder-decoder is not supported)")
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if getattr(backbone.config, "is_encoder_decoder", False) or not isinstance(layers, nn.ModuleList) or not all(
            hasattr(layer, "attention") and hasattr(layer.attention, "self") and hasattr(layer, "output")
            for layer in layers):
        raise ValueError(f"model.conditioning camtl conditions a BERT/RoBERTa-type encoder (encoder.layer[i]."
                         f"attention.self, .output.LayerNorm); {backbone.config.model_type} is not one "
                         "(BART's encoder-decoder is not supported)")
    return layers


def frozen_layer_count(setting, layers: int) -> int:
    """freeze_bottom_layers: 'half' (CA-MTL's: the lower half, rounded down) or a number of layers."""
    count = layers // 2 if setting == "half" else int(setting)
    if count > layers:
        raise ValueError(f"model.camtl.freeze_bottom_layers={setting} is more than the backbone's {layers} layers")
    return count


class FiLM(nn.Module):
    """gamma(z) = 1 + W_g z and beta(z) = W_b z, for a vector of `width`; both maps zero at the start."""

    def __init__(self, z_dim: int, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(width, z_dim))
        self.beta = nn.Parameter(torch.zeros(width, z_dim))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 1 + self.gamma @ z, self.beta @ z


class _LayerParts(nn.Module):
    """One conditioned layer's modules (those the spec switches on)."""

    def __init__(self, spec, hidden: int, z_dim: int, block: int):
        super().__init__()
        if spec.conditional_attention:
            self.blocks = nn.Parameter(torch.zeros(spec.attention_blocks, block, block))
            self.attention_film = nn.ModuleList(FiLM(z_dim, block) for _ in range(spec.attention_blocks))
        if spec.conditional_layer_norm:
            self.norm_film = nn.ModuleList(FiLM(z_dim, hidden) for _ in range(2))
        if spec.conditional_bottleneck:
            self.down = nn.Parameter(torch.empty(spec.bottleneck_dim, hidden).normal_(std=0.02))
            self.up = nn.Parameter(torch.zeros(hidden, spec.bottleneck_dim))
            self.bottleneck_film = FiLM(z_dim, spec.bottleneck_dim)


class CamtlConditioning(nn.Module):
    def __init__(self, backbone: nn.Module, tasks: int, spec, max_length: int):
        super().__init__()
        layers = encoder_layers(backbone)
        hidden = backbone.config.hidden_size
        self.spec, self.task = spec, None
        self.frozen = frozen_layer_count(spec.freeze_bottom_layers, len(layers))
        self.block = math.ceil(max_length / spec.attention_blocks)
        z_dim = spec.task_embedding_dim
        self.task_embedding = nn.Parameter(torch.randn(tasks, z_dim) / math.sqrt(z_dim))
        if spec.conditional_alignment:
            self.align_matrix = nn.Parameter(torch.eye(hidden))
            self.align_film = FiLM(z_dim, hidden)
        self.layers = nn.ModuleList(_LayerParts(spec, hidden, z_dim, self.block)
                                    for _ in range(len(layers) - self.frozen))
        for layer in layers[:self.frozen]:
            layer.requires_grad_(False)
        self._hooks = []
        self._attach(backbone, layers)

    # ------------------------------------------------------------------ hooks
    def _attach(self, backbone: nn.Module, layers: nn.ModuleList) -> None:
        if self.spec.conditional_alignment:
            self._hooks.append(backbone.embeddings.register_forward_hook(self._align))
        for parts, layer in zip(self.layers, layers[self.frozen:]):
            if self.spec.conditional_attention:
                self._hooks.append(layer.attention.self.register_forward_pre_hook(
                    self._attention_bias(parts), with_kwargs=True))
            if self.spec.conditional_layer_norm:
                for film, norm in zip(parts.norm_film, (layer.attention.output.LayerNorm, layer.output.LayerNorm)):
                    self._hooks.append(norm.register_forward_hook(self._norm(film)))
            if self.spec.conditional_bottleneck:
                self._hooks.append(layer.register_forward_hook(self._bottleneck(parts)))

    def detach_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def z(self) -> torch.Tensor:
        if self.task is None:
            raise RuntimeError("CA-MTL conditioning: no task set (MultiTaskModel sets it before the backbone runs)")
        return self.task_embedding[self.task]

    def _align(self, module, args, output):
        gamma, beta = self.align_film(self.z())
        return (output @ self.align_matrix.to(output.dtype)) * gamma.to(output.dtype) + beta.to(output.dtype)

    def _attention_bias(self, parts: _LayerParts):
        def hook(module, args, kwargs):
            states = args[0] if args else kwargs["hidden_states"]
            length = states.shape[1]
            z = self.z()
            blocks = []
            for n, film in enumerate(parts.attention_film):
                gamma, beta = film(z)
                blocks.append(parts.blocks[n] * gamma[None, :] + beta[None, :])
            bias = torch.block_diag(*blocks)[:length, :length].to(states.dtype)
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            if mask is None:
                additive = bias[None, None]
            elif mask.dtype == torch.bool:       # SDPA's: True where a position may be attended
                additive = torch.zeros(mask.shape, dtype=states.dtype, device=states.device).masked_fill(
                    ~mask, torch.finfo(states.dtype).min) + bias
            else:                                # eager's: additive already
                additive = mask.to(states.dtype) + bias
            if len(args) > 1:
                args = (args[0], additive, *args[2:])
            else:
                kwargs = {**kwargs, "attention_mask": additive}
            return args, kwargs
        return hook

    def _norm(self, film: FiLM):
        def hook(module, args, output):
            gamma, beta = film(self.z())
            x = args[0]
            normed = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
            return normed * (module.weight * gamma).to(x.dtype) + (module.bias + beta).to(x.dtype)
        return hook

    def _bottleneck(self, parts: _LayerParts):
        def hook(module, args, output):
            states = output[0] if isinstance(output, tuple) else output
            gamma, beta = parts.bottleneck_film(self.z())
            inner = F.gelu(F.linear(states, parts.down.to(states.dtype)) * gamma.to(states.dtype)
                           + beta.to(states.dtype))
            states = states + F.linear(inner, parts.up.to(states.dtype))
            return (states, *output[1:]) if isinstance(output, tuple) else states
        return hook
