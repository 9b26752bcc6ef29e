"""The multi-task model: a Hugging Face backbone (encoder-only, or BART) plus the heads of every family.

    model = build_model(recipe)                  # backbone from recipe.model, heads from recipe.tasks
    out = model(task_id, batch)                  # {"outputs": the task family's outputs, "inactive": 0-valued}

Heads (Muppet): a head per classification dataset and per regression dataset (stacked banks), ONE shared
ranking head for all multiple-choice tasks, ONE shared span head for all extractive tasks, and BART's own
decoder + LM head (tied to the embeddings) for summarization. On BART the heads read the decoder's
states as transformers' BartFor* classes do: the last real token (an end-of-sequence token) for
classification, regression and choices, every position for spans.

Same graph on every rank: each forward runs every head the model has, in a fixed order, on the batch's
features. The task's own family gives `outputs`; the others are summed into `inactive`, multiplied by 0,
which the step adds to the loss. Whatever tasks the ranks run in one micro-step, their backward passes
touch the same parameters in the same order, so DeepSpeed ZeRO-1/2 reduce matching gradient buckets.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prefinetune.families.family import BUILT_IN, Features, get_family
from prefinetune.model.alignment import TaskAlignment
from prefinetune.model.camtl import CamtlConditioning
from prefinetune.model.source import NO_HUB_KERNELS, resolve_model_source

__all__ = ["AttentionHeads", "TaskSpec", "MultiTaskModel", "freeze_pooler", "load_backbone", "build_model",
           "family_order", "resolve_head_widths", "with_head_widths"]


@dataclass(frozen=True)
class AttentionHeads:
    """model.head: attention: each task-bank task's head width (d_t) and the attention heads in every head."""
    widths: dict[str, int]
    heads: int = 1


@dataclass(frozen=True)
class TaskSpec:
    """What the model needs to know about one task: its family, its classes, its row in a head bank."""
    name: str
    family: str
    num_labels: int
    family_index: int = 0


def family_order(families) -> list[str]:
    """The fixed order every rank runs the heads in: built-in families first, then others by name."""
    rank = {name: i for i, name in enumerate(BUILT_IN)}
    return sorted(set(families), key=lambda f: (rank.get(f, len(BUILT_IN)), f))


def _family_indices(tasks: list[TaskSpec]) -> list[TaskSpec]:
    counters: dict[str, int] = {}
    out = []
    for t in tasks:
        out.append(TaskSpec(t.name, t.family, t.num_labels, counters.get(t.family, 0)))
        counters[t.family] = counters.get(t.family, 0) + 1
    return out


def _shift_right(ids: torch.Tensor, pad_id: int, start_id: int) -> torch.Tensor:
    """Decoder inputs: the sequence shifted one right behind the start token, -100 read as padding."""
    shifted = ids.new_full(ids.shape, pad_id)
    shifted[:, 1:] = ids[:, :-1]
    shifted[:, 0] = start_id
    return shifted.masked_fill(shifted == -100, pad_id)


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: nn.Module, tasks: list[TaskSpec], head_dropout: float, spectral_norm: bool = False,
                 shared_dense: bool = False, attention: AttentionHeads | None = None, alignment_at: str | None = None,
                 camtl=None, max_length: int = 512):
        super().__init__()
        self.backbone = backbone
        self.encoder_decoder = bool(getattr(backbone.config, "is_encoder_decoder", False))
        self.families = family_order(t.family for t in tasks)       # raises for an unknown family
        self._family = {name: get_family(name) for name in self.families}   # looked up once, not per forward
        needs_bart = [f for f in self.families if self._family[f].needs_encoder_decoder]
        if needs_bart and not self.encoder_decoder:
            raise ValueError(f"{needs_bart[0]} needs an encoder-decoder backbone such as BART; "
                             f"{backbone.config.model_type} is encoder-only")
        freeze_pooler(backbone)
        self.tasks = _family_indices(tasks)
        hidden = backbone.config.hidden_size if hasattr(backbone.config, "hidden_size") else backbone.config.d_model
        self.spectral_norm = spectral_norm     # R4F: every head's weight matrices spectrally normalised
        served: dict[str, list[TaskSpec]] = {}
        for t in self.tasks:
            served.setdefault(t.family, []).append(t)
        self.shared_dense = shared_dense       # model.head_dense: shared (prefinetune/model/heads.py)
        self.attention = attention             # model.head: attention (prefinetune/model/attention_heads.py)
        self.alignment_at = alignment_at       # model.alignment: per_task at embeddings|outputs (model/alignment.py)
        if alignment_at is not None:
            self.alignment = TaskAlignment(len(self.tasks), hidden)
        self.camtl = camtl                     # model.conditioning: camtl (its spec; prefinetune/model/camtl.py)
        self.conditioning = CamtlConditioning(backbone, len(self.tasks), camtl, max_length) if camtl else None
        for name in self.families:             # registered under the family's name: "classification.*", ...
            family = self._family[name]
            extra = {}
            if family.task_bank and shared_dense:
                extra["shared_dense"] = True
            if family.task_bank and attention is not None:
                extra["attention"] = ([attention.widths[t.name] for t in served[name]], attention.heads)
            self.add_module(name, family.build_head(served[name], hidden, head_dropout, spectral_norm, **extra))
        # from_pretrained leaves the backbone in eval mode: without this, its dropout would stay off in
        # training until the first evaluation switched the whole model back to train mode
        self.train()

    def task_id(self, name: str) -> int:
        for i, t in enumerate(self.tasks):
            if t.name == name:
                return i
        raise KeyError(f"unknown task {name!r}; the model has {[t.name for t in self.tasks]}")

    # ------------------------------------------------------------------ features
    def _features(self, task_id: int, batch: dict, reads_target: bool,
                  perturb=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(states [N, L, H], pooled [N, H], mask [N, L] of real positions) of the batch's sequences.
        On BART the states are the decoder's: over the source, or over the target (batch["labels"])
        for a family whose decoder reads it (summarization)."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.conditioning is not None:      # the task whose embedding CA-MTL's hooks read, also in a recompute
            self.conditioning.task = task_id
        if self.encoder_decoder:
            cfg = self.backbone.config
            source = batch["labels"] if reads_target else batch["input_ids"]
            inputs["decoder_input_ids"] = _shift_right(source, cfg.pad_token_id, cfg.decoder_start_token_id)
        elif "token_type_ids" in batch:
            inputs["token_type_ids"] = batch["token_type_ids"]
        aligned = self.alignment_at == "embeddings"
        if perturb is not None or aligned:    # the input (word) embeddings, aligned (Wu et al.), perturbed (R3F)
            embeds = self.backbone.get_input_embeddings()(inputs.pop("input_ids"))
            embeds = self.alignment(embeds, task_id) if aligned else embeds
            inputs["inputs_embeds"] = perturb(embeds) if perturb is not None else embeds
        states = self.backbone(**inputs).last_hidden_state
        if self.alignment_at == "outputs":
            states = self.alignment(states, task_id)
        mask = (batch["labels"] != -100).long() if reads_target else batch["attention_mask"]
        if self.encoder_decoder:   # last real token: the end-of-sequence token, as BartForSequenceClassification
            last = mask.sum(dim=1) - 1
            pooled = states[torch.arange(states.shape[0], device=states.device), last]
        else:
            pooled = states[:, 0]
        return states, pooled, mask

    def pooled(self, task_id: int, batch: dict) -> torch.Tensor:
        """[N, H]: the pooled state (first token; BART: last real token) of each sequence of a batch of
        the task, as its family's head reads the backbone (no head runs)."""
        task = self.tasks[task_id]
        return self._features(task_id, batch, self._family[task.family].decoder_reads_target)[1]

    def _lm_logits(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.backbone.get_input_embeddings().weight.T

    # ------------------------------------------------------------------ heads
    def forward(self, task_id: int, batch: dict, perturb=None) -> dict[str, object]:
        """`perturb`, when given, maps the input embeddings [N, L, H] to what the backbone reads (R3F).
        Every family's head runs, in `self.families` order: the task's own gives `outputs`, the others
        (run cheaply) are summed into `inactive` with weight 0."""
        task = self.tasks[task_id]
        states, pooled, mask = self._features(task_id, batch, self._family[task.family].decoder_reads_target, perturb)
        features = Features(states, pooled, mask, self._lm_logits)
        inactive = states.new_zeros((), dtype=torch.float32)
        outputs, idle = None, {}
        for name in self.families:
            own = name == task.family
            value = self._family[name].head_outputs(getattr(self, name), task if own else None, batch, features)
            if own:
                outputs = value
            else:
                part = sum(t.float().sum() for t in (value if isinstance(value, tuple) else (value,)))
                idle[name] = part.detach()        # read only when a loss is not finite: whose head it was
                inactive = inactive + part
        return {"outputs": outputs, "inactive": inactive * 0.0, "idle_heads": idle}

    @torch.no_grad()
    def generate(self, task_id: int, batch: dict, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with BART's decoder (summarization); returns [B, T] token ids."""
        if not self.encoder_decoder:
            raise ValueError("generate needs an encoder-decoder backbone")
        cfg = self.backbone.config
        source = {"input_ids": batch["input_ids"]}
        if self.alignment_at == "embeddings":      # as _features: the encoder reads the aligned embeddings
            embeds = self.backbone.get_input_embeddings()(batch["input_ids"])
            source = {"inputs_embeds": self.alignment(embeds, task_id)}
        encoder = self.backbone.get_encoder()(**source, attention_mask=batch["attention_mask"])
        tokens = batch["input_ids"].new_full((batch["input_ids"].shape[0], 1), cfg.decoder_start_token_id)
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            states = self.backbone.get_decoder()(
                input_ids=tokens, encoder_hidden_states=encoder.last_hidden_state,
                encoder_attention_mask=batch["attention_mask"]).last_hidden_state
            if self.alignment_at == "outputs":
                states = self.alignment(states, task_id)
            nxt = self._lm_logits(states[:, -1]).argmax(-1)
            nxt = nxt.masked_fill(done, cfg.pad_token_id)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == cfg.eos_token_id
            if done.all():
                break
        return tokens[:, 1:]


def freeze_pooler(backbone: nn.Module) -> None:
    """The heads read token states, so a BERT-style pooler is never used. It is kept (the export stays a
    complete AutoModel) but frozen: a trainable parameter that no rank's graph touches has no place in
    ZeRO's gradient buckets."""
    pooler = getattr(backbone, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


# the config attributes that hold a backbone's (hidden, attention) dropout, by naming convention
DROPOUT_KEYS = (("hidden_dropout_prob", "attention_probs_dropout_prob"), ("dropout", "attention_dropout"))


def load_backbone(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False,
                  dropout: float | None = None):
    """AutoModel from the hub, a local folder or a `pkg:` model; `dropout` replaces its hidden and
    attention dropout (BERT/RoBERTa: *_dropout_prob, BART: dropout, attention_dropout)."""
    from transformers import AutoConfig, AutoModel

    source = resolve_model_source(name_or_path)
    config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    if dropout is not None:
        keys = next((k for k in DROPOUT_KEYS if hasattr(config, k[0])), None)
        if keys is None:
            raise ValueError(f"model.dropout: {config.model_type} has none of the dropout settings "
                             f"{[k for pair in DROPOUT_KEYS for k in pair]}")
        for key in keys:
            setattr(config, key, dropout)
    return AutoModel.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code, config=config,
                                     **NO_HUB_KERNELS)


def enable_gradient_checkpointing(backbone: nn.Module) -> None:
    """transformers' activation checkpointing in every layer: each layer's activations are recomputed
    in the backward pass instead of kept. Non-reentrant (torch.utils.checkpoint's recommended form),
    which works with ZeRO's gradient hooks and with inputs that need no gradient; dropout is replayed
    with the same random state, so the gradients are those of the plain model."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(f"model.gradient_checkpointing: {type(backbone).__name__} does not support it in "
                         "transformers")
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):      # transformers' newer name (5.x)
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_model(recipe, backbone: nn.Module | None = None, rows: dict[str, int] | None = None) -> MultiTaskModel:
    """The model for a recipe; `backbone` replaces the recipe's (tests pass tiny random ones); `rows` (task ->
    training rows) sizes DyPa's attention heads, read from the prepared shards' manifest when not given."""
    if backbone is None:
        m = recipe.model
        backbone = load_backbone(m.name_or_path, m.revision, m.trust_remote_code, m.dropout)
    if recipe.model.gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    heads = [TaskSpec(t.name, t.family, t.num_labels) for t in recipe.tasks]
    m = recipe.model
    return MultiTaskModel(backbone, heads, m.head_dropout, spectral_norm=recipe.r3f.spectral_norm,
                          shared_dense=m.head_dense == "shared", attention=attention_heads(recipe, rows),
                          alignment_at=m.alignment_at if m.alignment == "per_task" else None,
                          camtl=camtl_spec(m), max_length=m.max_length)


def camtl_spec(model_section):
    """The recipe's CA-MTL spec (model.camtl, or its defaults), or None without model.conditioning: camtl."""
    from prefinetune.recipe.config import CamtlSection

    if model_section.conditioning != "camtl":
        return None
    return model_section.camtl or CamtlSection()


def attention_heads(recipe, rows: dict[str, int] | None = None) -> AttentionHeads | None:
    """The recipe's attention heads (model.head: attention), or None for Muppet's fc heads."""
    from prefinetune.model.attention_heads import task_widths

    m = recipe.model
    if m.head != "attention":
        return None
    names = [t.name for t in recipe.tasks if get_family(t.family).task_bank]
    if m.head_dim == "dypa" and rows is None:
        rows = training_rows(recipe.shards_path)
    return AttentionHeads(task_widths(m, names, rows), m.head_attention_heads or 1)


def resolve_head_widths(recipe, rows: dict[str, int] | None = None):
    """The recipe with model.head_dim dypa made the task -> width map it stands for (model.dypa dropped), from
    the prepared shards' train rows: what the workers, the checkpoints' recorded recipe, recipe.json and the
    export then build, so a resume or an export never sizes the heads from shards that changed since."""
    if recipe.model.head != "attention" or recipe.model.head_dim != "dypa":
        return recipe
    return with_head_widths(recipe, attention_heads(recipe, rows).widths)


def with_head_widths(recipe, widths: dict[str, int]):
    """The recipe with model.head_dim the given task -> width map (and model.dypa dropped)."""
    from prefinetune.recipe.config import recipe_from_dict

    data = recipe.model_dump(mode="json")
    data["model"].update(head_dim=widths, dypa=None)
    return recipe_from_dict(data, "<recipe with its heads' widths>")


def training_rows(shards_dir) -> dict[str, int] | None:
    """task -> train rows, from the prepared shards' manifest; None when there is none."""
    from prefinetune.data.shards import read_manifest

    try:
        manifest = read_manifest(shards_dir)
    except FileNotFoundError:
        return None
    return {name: entry["splits"]["train"]["rows"] for name, entry in manifest["tasks"].items()
            if "train" in entry.get("splits", {})}
