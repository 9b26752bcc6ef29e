"""The recipe schema: typed, validated, serialisable config for a pre-finetuning run (the task section
is in prefinetune/recipe/task_config.py, the command-line override parser in prefinetune/recipe/overrides.py).

A recipe is YAML with the sections below; `load_recipe(path, overrides)` validates it
(unknown keys and bad values raise `RecipeError` naming the key) and applies
command-line overrides such as `train.updates=200` or `tasks.0.label_names=[a,b]`.
The result is plain data (`RecipeConfig.model_dump()`) that travels to Ray workers unchanged.

    python -c "from prefinetune.recipe.config import load_recipe; print(load_recipe('recipes/local_cpu.yaml'))"
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from prefinetune.recipe.overrides import apply_overrides
from prefinetune.recipe.task_config import Column, RecipeError, TaskConfig, _Strict, family_roles

__all__ = ["RecipeConfig", "CamtlSection", "FinetuneSection", "TaskConfig", "RecipeError", "Column", "family_roles",
           "load_recipe", "apply_overrides", "recipe_from_dict"]

class RunSection(_Strict):
    name: str = Field("prefinetune", description="run name; the run folder is output_dir/name")
    output_dir: str = Field("runs", description="where shards, checkpoints, metrics and the export go")
    seed: int = Field(0, description="seeds the slot schedule, head init and dropout")


DEFAULT_HEAD_DIM = 64       # Wolfe & Lundgaard's d_t: about 10x fewer parameters than an fc head at H = 768


class DypaSection(_Strict):
    """DyPa (Wolfe & Lundgaard): a task's attention-head width by where its training rows fall among the run's
    tasks'. Quartiles of a normalised count are those of the count, so the rows are used as they are."""
    bounds: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        [0.25, 0.5, 0.75], min_length=1, description="quantile levels over the attention-head tasks' training "
        "rows, increasing; a task at or below the first level's rows gets sizes[0], above the last sizes[-1]")
    sizes: list[Annotated[int, Field(ge=8)]] = Field(
        [128, 256, 512, 1024], description="head widths, one more than bounds, from the fewest rows to the most")

    @model_validator(mode="after")
    def _one_size_per_interval(self) -> "DypaSection":
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:])):
            raise ValueError(f"model.dypa.bounds must increase: {self.bounds}")
        if len(self.sizes) != len(self.bounds) + 1:
            raise ValueError(f"model.dypa.sizes needs {len(self.bounds) + 1} widths (one more than bounds), "
                             f"got {len(self.sizes)}")
        return self


class CamtlSection(_Strict):
    """CA-MTL's task-conditioned transformer (prefinetune/model/camtl.py): which parts, and their sizes."""
    conditional_attention: bool = Field(True, description="a block-diagonal task bias on each conditioned layer's "
                                        "attention scores")
    conditional_alignment: bool = Field(True, description="a task-modulated alignment between the embeddings and "
                                        "the first layer")
    conditional_layer_norm: bool = Field(True, description="task-modulated LayerNorms in each conditioned layer")
    conditional_bottleneck: bool = Field(True, description="a task-modulated bottleneck adapter after each "
                                         "conditioned layer")
    freeze_bottom_layers: Union[Literal["half"], Annotated[int, Field(ge=0)]] = Field(
        "half", description="encoder layers frozen from the bottom (half: CA-MTL's lower half, rounded down); the "
        "layers above are the conditioned ones")
    task_embedding_dim: int = Field(64, ge=1, description="the width of each task's embedding z")
    attention_blocks: int = Field(4, ge=1, description="conditional attention: N, the diagonal blocks of the bias "
                                  "(each of ceil(max_length / N) positions)")
    bottleneck_dim: int = Field(64, ge=1, description="conditional bottleneck: its inner width")


class ModelSection(_Strict):
    name_or_path: str = Field(..., description="hub id or local folder of a Hugging Face encoder")
    revision: Optional[str] = Field(None, description="hub revision (branch, tag or commit)")
    trust_remote_code: bool = Field(False, description="run model code from the hub; off unless asked")
    max_length: int = Field(128, ge=8, le=8192, description="tokens per sequence after truncation")
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout inside the task heads")
    dropout: Optional[float] = Field(None, ge=0.0, lt=1.0, description="the backbone's hidden and attention "
                                     "dropout (a fine-tuning knob, as in Muppet's grid); None keeps the model's")
    head_dense: Literal["per_task", "shared"] = Field(
        "per_task", description="classification/regression heads: per_task, Muppet's dense H x H layer per "
        "dataset (T x H^2 parameters); shared, one dense layer for all datasets and a projection per dataset "
        "(H^2 + T x labels x H), for hundreds or thousands of tasks (prefinetune/model/heads.py)")
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass instead of keeping them "
        "(transformers' activation checkpointing): less activation memory for about a third more compute")
    head: Literal["fc", "attention"] = Field(
        "fc", description="classification/regression heads: fc, Muppet's (first token -> dense -> tanh -> "
        "projection); attention, Wolfe & Lundgaard's low-dimensional self-attention head (tokens projected to "
        "head_dim, self-attention, mean over tokens, linear classifier; prefinetune/model/attention_heads.py)")
    head_dim: Optional[Union[Annotated[int, Field(ge=8)], Literal["dypa"], dict[str, Annotated[int, Field(ge=8)]]]] = \
        Field(None, description="model.head attention: d_t, the width each task's head projects to: one number for "
              "every task (None: 64), 'dypa' (sized by the quartile of the task's training rows, model.dypa), or "
              "task -> width for every classification/regression task")
    head_attention_heads: Optional[int] = Field(
        None, ge=1, description="model.head attention: attention heads in each task's head (None: 1); divides head_dim")
    alignment: Literal["none", "per_task"] = Field(
        "none", description="per_task: Wu, Zhang & Ré's covariance alignment, a H x H matrix per task (identity at "
        "the start, never weight-decayed) on what the task feeds the encoder or what the encoder gives its head "
        "(alignment_at; prefinetune/model/alignment.py); T x H^2 parameters")
    alignment_at: Literal["embeddings", "outputs"] = Field(
        "embeddings", description="alignment per_task: embeddings, the task's input word embeddings before the "
        "encoder (the paper's Algorithm 1: Z = E R); outputs, the backbone's final states (BART: the decoder's) "
        "before the task's head")
    conditioning: Literal["none", "camtl"] = Field(
        "none", description="camtl: CA-MTL's task-conditioned transformer on a BERT/RoBERTa-type encoder (task "
        "embeddings, conditional attention, alignment, layer norm and bottleneck, the bottom layers frozen; "
        "model.camtl; prefinetune/model/camtl.py)")
    camtl: Optional[CamtlSection] = Field(None, description="conditioning camtl: its parts and sizes; None: all "
                                          "parts, the lower half frozen, z of 64")
    dypa: Optional[DypaSection] = Field(
        None, description="model.head_dim dypa: {bounds, sizes}; None: the paper's quartiles and 128/256/512/1024")

    @model_validator(mode="after")
    def _head_keys_fit_the_head(self) -> "ModelSection":
        if self.camtl is not None and self.conditioning != "camtl":
            raise ValueError("model.camtl sets CA-MTL's conditioning: it needs model.conditioning: camtl")
        if self.alignment == "none" and self.alignment_at != "embeddings":
            raise ValueError("model.alignment_at places the per-task alignment: it needs model.alignment: per_task")
        if self.head == "fc":
            given = [k for k in ("head_dim", "head_attention_heads", "dypa") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"model.{given[0]} sizes the attention head: it needs model.head: attention "
                                 "(model.head is fc)")
            return self
        if self.head_dense == "shared":
            raise ValueError("model.head_dense: shared shares the fc head's dense layer; model.head: attention has "
                             "none (leave head_dense at per_task)")
        if self.dypa is not None and self.head_dim != "dypa":
            raise ValueError(f"model.dypa sizes heads only with model.head_dim: dypa (head_dim is {self.head_dim!r})")
        heads = self.head_attention_heads or 1
        widths = (self.dypa or DypaSection()).sizes if self.head_dim == "dypa" else \
            list(self.head_dim.values()) if isinstance(self.head_dim, dict) else [self.head_dim or DEFAULT_HEAD_DIM]
        bad = sorted({w for w in widths if w % heads})
        if bad:
            raise ValueError(f"model.head_attention_heads={heads} must divide every head width; {bad} are not "
                             "multiples of it")
        return self


class DataSection(_Strict):
    root: Optional[str] = Field(None, description="folder the task files are read from (only read, never "
                                "written to); command line: --data-dir")
    synthetic: bool = Field(False, description="generate the offline synthetic suite into the run folder "
                            "(output_dir/name/synthetic_data) and read the tasks from there")
    synthetic_rows: int = Field(3000, ge=50, description="train rows per synthetic task")
    shards_dir: Optional[str] = Field(None, description="prepared shards; default output_dir/shards")
    num_proc: int = Field(2, ge=1, description="tokenizer workers: threads running the Rust tokenizer for "
                          "classification and regression (fast tokenizers), else datasets.map processes")
    on_bad_row: Literal["error", "quarantine"] = Field(
        "error", description="error: stop naming file/row/field; quarantine: set aside and count")

    @model_validator(mode="after")
    def _generated_or_read(self) -> "DataSection":
        """Generated data goes under the run folder, never into a folder of inputs."""
        if self.synthetic and self.root is not None:
            raise ValueError(f"synthetic: true writes its files under the run folder, and root={self.root!r} "
                             "is a folder of input files, only read: set one of them (--data-dir turns "
                             "synthetic off)")
        return self


class SamplingSection(_Strict):
    """Task sampling (prefinetune/sampling/policies.py): how likely each task is at each update, and how
    the slots of an update share tasks. Everything is a pure function of (seed, update, slot, updates)."""
    policy: Literal["natural", "uniform", "temperature", "rates", "mt_uncertainty"] = Field(
        "natural", description="P(task): natural ∝ training rows (Muppet); uniform; temperature ∝ rows^alpha; "
        "rates: ∝ sampling.rates (an explicit mixture); mt_uncertainty: each slot trains on the candidate batch "
        "the model is least sure of (CA-MTL; prefinetune/sampling/uncertainty.py)")
    rates: Optional[dict[str, Union[Annotated[float, Field(ge=0.0)], Literal["examples"]]]] = Field(
        None, description="policy rates: task -> rate, every task named (0 leaves a task out of the mixture); "
        "P(task) = rate / sum of rates (seqio's mixture rates). A rate 'examples' is the task's training rows, "
        "capped by examples_cap (seqio's mixing_rate_num_examples), in the same units as the numbers")
    alpha: float = Field(1.0, ge=0.0, description="temperature: the fixed exponent when anneal is 'none' "
                         "(1 = natural, 0 = uniform; T5's temperature T is alpha = 1/T)")
    anneal: Literal["none", "linear", "exponential", "cosine"] = Field(
        "none", description="temperature: move alpha from alpha_start (first update) to alpha_end (last) "
        "linearly, geometrically (exponential) or along a half cosine. Left out with policy temperature: "
        "'exponential' (Wolfe & Lundgaard 2022: 1.0 -> 0.1), or 'none' if alpha is given")
    alpha_start: float = Field(1.0, ge=0.0, description="temperature with anneal: alpha at the first update")
    alpha_end: float = Field(0.1, ge=0.0, description="temperature with anneal: alpha at the end of the run")
    examples_cap: Optional[int] = Field(
        None, ge=1, description="natural/temperature (and rates' 'examples'): count at most this many rows of a task "
        "(T5/seqio's examples-proportional mixing cap), so the largest tasks do not crowd out the rest")
    strategy: Literal["batch_heterogeneous", "batch_homogeneous", "dataset_homogeneous"] = Field(
        "batch_heterogeneous", description="Muppet 5.2: batch_heterogeneous = each slot draws its own task; "
        "batch_homogeneous = one task per update, drawn from the policy; dataset_homogeneous = tasks one "
        "after another in a seeded order, each for its share of the run's updates")
    candidate_tasks: Optional[int] = Field(
        None, ge=1, description="mt_uncertainty: tasks that offer a candidate batch to each slot, drawn uniformly "
        "without replacement per slot (None: every task, as in CA-MTL). Each candidate costs one forward pass")
    task_weights: Literal["none", "svd"] = Field(
        "none", description="svd: Wu, Zhang & Ré's SVD task re-weighting, each slot's loss multiplied by its task's "
        "weight, recomputed every svd_every updates from the tasks' mean representations "
        "(prefinetune/sampling/svd_weights.py); logged per window, kept in checkpoints")
    svd_every: int = Field(100, ge=1, description="task_weights svd: recompute the weights every N updates "
                           "(before updates 1, N + 1, 2N + 1, ...)")
    svd_rank: int = Field(1, ge=1, description="task_weights svd: r, the principal directions a task's "
                          "representation is projected on")
    svd_rows: int = Field(64, ge=1, description="task_weights svd: training rows whose mean pooled state "
                          "represents a task (a seeded draw, fixed for the run; fewer if the task has fewer)")

    @model_validator(mode="before")
    @classmethod
    def _default_anneal(cls, data: Any) -> Any:
        """policy temperature without alpha or anneal: the exponential 1.0 -> 0.1 schedule."""
        if isinstance(data, dict) and data.get("anneal") is None:
            data = dict(data)
            annealed = data.get("policy") == "temperature" and data.get("alpha") is None
            data["anneal"] = "exponential" if annealed else "none"
        return data

    @model_validator(mode="after")
    def _keys_fit_the_policy(self) -> "SamplingSection":
        defaults = {k: f.default for k, f in type(self).model_fields.items()}
        svd_keys = [k for k in ("svd_every", "svd_rank", "svd_rows") if getattr(self, k) != defaults[k]]
        if self.task_weights == "none" and svd_keys:
            raise ValueError(f"sampling.{svd_keys[0]} sets the SVD task weights: it needs sampling.task_weights: svd")
        if self.policy != "temperature":
            if self.anneal != "none":
                raise ValueError(f"anneal={self.anneal!r} anneals the temperature exponent: it needs "
                                 f"policy 'temperature', not {self.policy!r}")
            if self.alpha != 1.0:
                raise ValueError(f"alpha is the temperature exponent: it needs policy 'temperature', "
                                 f"not {self.policy!r}")
        if self.policy in ("uniform", "mt_uncertainty") and self.examples_cap is not None:
            raise ValueError(f"examples_cap has no effect with policy {self.policy!r}; use natural, temperature or "
                             "rates")
        if (self.policy == "rates") != (self.rates is not None):
            raise ValueError("policy 'rates' takes its mixture from sampling.rates: give both or neither"
                             if self.policy == "rates" or self.rates is None else
                             f"sampling.rates is the mixture of policy 'rates', not {self.policy!r}")
        if self.rates is not None and self.examples_cap is not None and "examples" not in self.rates.values():
            raise ValueError("examples_cap caps the rate 'examples'; sampling.rates gives none, so it has no effect")
        if self.rates is not None and not any(r == "examples" or r > 0 for r in self.rates.values()):
            raise ValueError(f"sampling.rates gives every task rate 0: nothing to sample ({self.rates})")
        if self.policy == "mt_uncertainty" and self.strategy != "batch_heterogeneous":
            raise ValueError(f"policy 'mt_uncertainty' picks a task per slot: it needs strategy "
                             f"'batch_heterogeneous', not {self.strategy!r}")
        if self.candidate_tasks is not None and self.policy != "mt_uncertainty":
            raise ValueError(f"candidate_tasks is for policy 'mt_uncertainty', not {self.policy!r}")
        if self.anneal == "none":
            moved = [k for k in ("alpha_start", "alpha_end") if getattr(self, k) != defaults[k]]
            if moved:
                raise ValueError(f"{' and '.join(moved)} only apply with anneal linear, exponential or "
                                 "cosine; a fixed temperature exponent is alpha")
        else:
            if self.alpha != 1.0:
                raise ValueError(f"alpha is the fixed exponent; with anneal={self.anneal!r} set alpha_start "
                                 "and alpha_end instead")
            if self.anneal == "exponential" and not (self.alpha_start > 0 and self.alpha_end > 0):
                raise ValueError("anneal 'exponential' interpolates geometrically: it needs alpha_start > 0 "
                                 f"and alpha_end > 0 (got alpha_start={self.alpha_start}, "
                                 f"alpha_end={self.alpha_end})")
        return self


class TrainSection(_Strict):
    updates: Optional[int] = Field(None, ge=1, description="optimizer updates in the run (a fine-tune recipe "
                                   "may give finetune.epochs instead)")
    slots_per_update: int = Field(64, ge=1, description="homogeneous micro-batches per update (Muppet: 64)")
    batch_size: int = Field(16, ge=1, description="rows in one slot's micro-batch (unused with token_budget)")
    log_every: int = Field(10, ge=1, description="updates between metric lines")
    token_budget: Union[Literal["auto"], Annotated[int, Field(ge=8)], None] = Field(
        "auto", description="tokens per slot: rows x padded length of a slot's batch stays within it (a row "
        "longer than the budget goes alone), rows of similar length batched together (multiple choice: rows x "
        "longest choice; the [B*K, L] tensor is K times that). auto (default): per task, the budget whose slots "
        "hold batch_size rows on average (at most batch_size x max_length). null: batch_size random rows per "
        "slot (the ablation). See prefinetune/sampling/batching.py")
    nonfinite_skips: int = Field(
        0, ge=0, description="updates with a NaN/inf loss or gradient to skip (on every rank, counted as "
        "skipped_updates in metrics.jsonl) before the run stops; 0: the first one stops the run, naming its "
        "task, update, slot and rows. Skipping needs deepspeed.zero_stage 1 or 2")
    length_buckets: Optional[int] = Field(
        None, ge=1, le=128, description="with token_budget: length buckets per task, their boundaries fitted to "
        "the task's own lengths for least padding (1: no bucketing; None: 8)")

    updates_from_epochs: Optional[float] = Field(None, description="set by the driver: the finetune.epochs "
                                                 "that train.updates was computed from")

    @model_validator(mode="after")
    def _buckets_need_budget(self) -> "TrainSection":
        if self.length_buckets is not None and self.token_budget is None:
            raise ValueError("length_buckets acts only with a token_budget (without one every slot holds "
                             "batch_size random rows): set token_budget too, or drop length_buckets")
        return self


class OptimSection(_Strict):
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    warmup_updates: int = Field(0, ge=0)
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm; 0 turns clipping off")


ZERO3_REFUSED = (
    "deepspeed.zero_stage 3 is not supported: ZeRO-3 keeps every parameter cut into per-rank pieces except "
    "inside its own module's forward, and this project reads parameters outside one (the R3F precision check "
    "reads the input embeddings; head reuse and the export read whole heads); no ZeRO-3 parity test covers "
    "it. Use zero_stage 2 (optimizer state and gradients partitioned) with model.gradient_checkpointing: "
    "true for activation memory")


class DeepSpeedSection(_Strict):
    zero_stage: int = Field(2, description="0, 1 or 2 (ZeRO-3 is refused: see below)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")

    @field_validator("zero_stage")
    @classmethod
    def _stage_supported(cls, value: int) -> int:
        if value == 3:
            raise ValueError(ZERO3_REFUSED)
        if value not in (0, 1, 2):
            raise ValueError(f"zero_stage must be 0, 1 or 2, not {value}")
        return value


class R3FSection(_Strict):
    enabled: bool = Field(False, description="add the R3F penalty lambda * symKL(f(x), f(x + z))")
    weight: float = Field(1.0, ge=0, description="lambda, the penalty's weight (paper default 1)")
    sigma: float = Field(1e-5, ge=0, description="scale of the noise z on the input embeddings")
    noise: Literal["normal", "uniform"] = Field("normal", description="z ~ N(0, sigma^2) or U(-sigma, sigma)")
    spectral_norm: bool = Field(False, description="R4F: spectral normalisation of the heads (needs enabled)")

    @model_validator(mode="after")
    def _r4f_needs_r3f(self) -> "R3FSection":
        if self.spectral_norm and not self.enabled:
            raise ValueError("spectral_norm (R4F) is R3F plus spectral normalisation: set enabled: true too")
        return self


class ScalingSection(_Strict):
    num_workers: int = Field(64, ge=1, description="Ray Train workers (one DeepSpeed rank each)")
    use_gpu: bool = True
    cpus_per_worker: float = Field(1, gt=0)
    max_failures: int = Field(0, ge=-1, description="Ray Train restarts after a worker failure")


class CheckpointSection(_Strict):
    every_updates: int = Field(100, ge=1)
    keep: int = Field(2, ge=1, description="checkpoints kept: the newest, or with eval.select the best and the newest "
                      "(torn ones: set aside in torn/, not counted)")


class SelectSection(_Strict):
    metric: str = Field(..., description="<task>/<metric> of eval.split (e.g. rte/accuracy), or 'mean': the mean "
                        "over the tasks of each task's first metric")
    mode: Literal["max", "min"] = "max"


class EvalSection(_Strict):
    every_updates: int = Field(100, ge=1)
    split: str = "dev"
    max_rows: Optional[int] = Field(None, ge=1, description="cap on rows evaluated per task")
    batch_size: int = Field(64, ge=1)
    select: Optional[SelectSection] = Field(
        None, description="the run's score: checkpoint.keep keeps the best checkpoints by it (and the newest), "
        "export.which: best exports the best one (prefinetune/run/selection.py)")
    patience: Optional[int] = Field(None, ge=1, description="with select: stop after this many evaluations in a "
                                    "row without improvement")


class LogSection(_Strict):
    """Where a run's metrics go besides its console and RUN_DIR/metrics.jsonl (always written): trackers,
    written by rank 0 (prefinetune/run/trackers.py). Each is an optional extra: pip install
    'prefinetune[tensorboard]' (or mlflow, wandb)."""
    trackers: list[Literal["jsonl", "tensorboard", "mlflow", "wandb"]] = Field(
        ["jsonl"], description="jsonl (metrics.jsonl, always on); tensorboard: event files in RUN_DIR/tensorboard; "
        "mlflow: a run in mlflow_tracking_uri; wandb: a run in wandb_project")
    mlflow_tracking_uri: Optional[str] = Field(
        None, description="mlflow: the tracking URI (None: file:RUN_DIR/mlruns, a local file store)")
    wandb_project: str = Field("prefinetune", description="wandb: the project (WANDB_MODE=offline keeps it local)")

    @field_validator("trackers")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"log.trackers repeats a tracker: {v}")
        return v


class DiagnosticsSection(_Strict):
    """What a run measures about its tasks beyond their metrics (prefinetune/run/gradient_conflict.py); read by
    `prefinetune report`."""
    every: int = Field(0, ge=0, description="sample the gradient conflict between tasks every N updates (the cosine "
                       "of slot gradients in the backbone, read from the training backward passes; "
                       "RUN_DIR/gradient_conflict.jsonl); 0: off, nothing hooked")
    coordinates: int = Field(16384, ge=1, le=1_000_000, description="backbone gradient coordinates sampled per "
                             "slot (a fixed random sample; every coordinate when the backbone has fewer); each "
                             "sampled slot's vector travels to every rank, so at most 1,000,000")
    report: bool = Field(True, description="a pre-finetuning run started by the command line writes RUN_DIR/report/ "
                         "once exported (prefinetune report: task similarity, gradient conflict, loss curves, "
                         "task mix); best-effort, a failure is a warning")
    report_rows: int = Field(256, ge=0, description="report: each task's eval rows represented (0: all)")


class ExportSection(_Strict):
    task_folders: Union[Literal["all", "none"], list[str]] = Field(
        "all", description="which tasks get a stock AutoModelFor* folder (tasks/<name>) in the export: all, none, "
        "or a list of names; their backbone weights are one hard-linked file, so each costs its head on disk. "
        "Others can be added later: prefinetune task-folders EXPORT NAME")
    which: Optional[Literal["best", "last"]] = Field(
        None, description="the checkpoint exported: best (by eval.select) or last; None: best when eval.select is set")


class LoraSection(_Strict):
    """LoRA adapters on the backbone (peft; `pip install prefinetune[lora]`): only they and the head train."""
    r: int = Field(8, ge=1, description="rank of each adapter (B A, A: r x in, B: out x r)")
    alpha: float = Field(16.0, gt=0, description="the adapter's update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on each adapter's input")
    target_modules: Optional[list[str]] = Field(
        None, min_length=1, description="names of the linear layers to adapt (peft's target_modules); None: "
        "peft's default for the model type (BERT, RoBERTa: query, value; BART: q_proj, v_proj)")

    @model_validator(mode="after")
    def _peft_installed(self) -> "LoraSection":
        """Refused with the recipe, before any work, where peft is not installed."""
        import importlib.util

        try:
            found = importlib.util.find_spec("peft") is not None
        except ValueError:           # a module entry of None: Python could not import it
            found = False
        if not found:
            raise ValueError("LoRA needs peft, which is not installed: pip install 'prefinetune[lora]'")
        return self


class FinetuneSection(_Strict):
    """Downstream fine-tuning of one task (prefinetune/finetune/): how much data, for how long, which head.
    See prefinetune/finetune/plan.py for how the rows are chosen."""
    epochs: Optional[float] = Field(None, gt=0, description="passes over the (fraction of the) training rows; "
                                    "sets train.updates, which must then be left out")
    warmup_fraction: Optional[float] = Field(None, ge=0, lt=1, description="with epochs: optim.warmup_updates "
                                             "as this share of the updates")
    train_fraction: float = Field(1.0, gt=0, le=1, description="share of the training rows used (Muppet's "
                                  "learning curves: 0.1 ... 1.0), drawn by fraction_seed")
    fraction_seed: Optional[int] = Field(None, description="which rows a fraction keeps; None: run.seed")
    heldout: float = Field(0.1, gt=0, lt=1, description="share of train held out as split 'heldout' when the "
                           "task lacks a dev or a test split (model selection needs one, the score the other)")
    heldout_seed: int = Field(0, description="which training rows are held out (fixed across seeds and fractions)")
    reuse_head: bool = Field(True, description="start from the export's head for this task where it has one "
                             "(by name, or head_from); false: a fresh head")
    head_from: Optional[str] = Field(None, description="the export's task whose head to reuse; None: the same name")
    task_embedding_from: Optional[str] = Field(
        None, description="a CA-MTL export (model.conditioning camtl): whose task embedding z the task starts from: a "
        "task of the export, or 'mean' (the mean of its trained embeddings); None: the task's own where the export "
        "has it (by name or head_from), else for a multiple-choice or span task the mean of the export's tasks of "
        "that family (whose shared head it reuses), else the mean of all")
    eval_at_start: bool = Field(True, description="score the starting model before the first update "
                                "(update 0 in metrics.jsonl)")
    grid: dict[str, list[Any]] = Field(
        default_factory=dict, description="prefinetune compare: recipe key -> values, searched as a full grid "
        "per model, fraction and seed, e.g. {optim.lr: [1e-5, 2e-5], optim.eps: [1e-6, 1e-8]}")
    lora: Optional[LoraSection] = Field(
        None, description="train LoRA adapters and the head instead of every weight ({r, alpha, dropout, "
        "target_modules}); the export holds the merged model (a stock folder) and the adapter alone (adapter/)")


class RecipeConfig(_Strict):
    run: RunSection = RunSection()
    model: ModelSection
    data: DataSection = DataSection()
    tasks: list[TaskConfig] = Field(..., min_length=1)
    sampling: SamplingSection = SamplingSection()
    train: TrainSection
    optim: OptimSection = OptimSection()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    r3f: R3FSection = R3FSection()
    scaling: ScalingSection = ScalingSection()
    checkpoint: CheckpointSection = CheckpointSection()
    eval: EvalSection = EvalSection()
    log: LogSection = LogSection()
    diagnostics: DiagnosticsSection = DiagnosticsSection()
    export: ExportSection = ExportSection()
    finetune: Optional[FinetuneSection] = Field(None, description="a downstream fine-tuning run of one task")

    @model_validator(mode="after")
    def _consistent(self) -> "RecipeConfig":
        self._check_length()
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks repeat a name: {dupes}")
        if self.train.slots_per_update % self.scaling.num_workers:
            raise ValueError(
                f"train.slots_per_update={self.train.slots_per_update} must be a multiple of "
                f"scaling.num_workers={self.scaling.num_workers}: every worker runs the same "
                "number of micro-steps per update")
        if self.sampling.policy == "mt_uncertainty":
            self._check_uncertainty_tasks()
        if self.sampling.rates is not None:
            self._check_rates(names)
        if self.sampling.task_weights == "svd" and self.sampling.svd_rank > len(names):
            raise ValueError(f"sampling.svd_rank={self.sampling.svd_rank} is more than the recipe's {len(names)} tasks "
                             "(the principal directions of T task vectors are at most T)")
        self._check_select(names)
        if isinstance(self.model.head_dim, dict):
            self._check_head_dims()
        unknown = [n for n in self.export.task_folders if n not in names] \
            if isinstance(self.export.task_folders, list) else []
        if unknown:
            raise ValueError(f"export.task_folders names tasks the recipe does not have: {unknown}; its tasks: {names}")
        if self.train.nonfinite_skips and self.deepspeed.zero_stage == 0:
            raise ValueError(f"train.nonfinite_skips={self.train.nonfinite_skips} needs deepspeed.zero_stage 1 or 2: "
                             "the ZeRO optimizer is what skips an update whose gradient is not finite")
        return self

    def _check_length(self) -> None:
        """train.updates, or (fine-tuning) finetune.epochs from which the driver computes it; not both."""
        epochs = self.finetune.epochs if self.finetune is not None else None
        if self.finetune is not None and len(self.tasks) != 1:
            raise ValueError(f"a finetune recipe trains one task; this one lists {[t.name for t in self.tasks]}")
        if self.train.updates is None and epochs is None:
            raise ValueError("train.updates is required (a finetune recipe may give finetune.epochs instead)")
        if self.train.updates is not None and epochs is not None and self.train.updates_from_epochs is None:
            raise ValueError(f"give train.updates={self.train.updates} or finetune.epochs={epochs}, not both "
                             "(to give the updates, add finetune.epochs=null)")

    def _check_select(self, names: list[str]) -> None:
        select, ev = self.eval.select, self.eval
        if select is None:
            if ev.patience is not None or self.export.which == "best":
                raise ValueError(f"{'eval.patience' if ev.patience is not None else 'export.which: best'} needs "
                                 "eval.select, the score it reads (e.g. eval.select={metric: mean, mode: max})")
            return
        if self.finetune is not None and self.export.which != "last":
            raise ValueError("a fine-tuning run reports the select and test scores of its last checkpoint: with "
                             "eval.select set export.which: last (early stopping, eval.patience, still applies)")
        task = select.metric.split("/")[0]
        if select.metric != "mean" and (select.metric.count("/") != 1 or task not in names):
            raise ValueError(f"eval.select.metric {select.metric!r} is 'mean' or <task>/<metric> with a task of "
                             f"the recipe: {names}")
        if self.checkpoint.every_updates % ev.every_updates:
            raise ValueError(f"eval.select scores each checkpoint by the evaluation at its update: "
                             f"checkpoint.every_updates={self.checkpoint.every_updates} must be a multiple of "
                             f"eval.every_updates={ev.every_updates}")

    def _check_rates(self, names: list[str]) -> None:
        rates = self.sampling.rates
        missing, unknown = [n for n in names if n not in rates], sorted(set(rates) - set(names))
        if unknown:
            raise ValueError(f"sampling.rates names tasks the recipe does not have: {unknown}; its tasks: {names}")
        if missing:
            raise ValueError(f"sampling.rates gives no rate to tasks {missing}: name every task (0 leaves one out "
                             "of the mixture, 'examples' weighs it by its rows)")

    def _check_head_dims(self) -> None:
        """model.head_dim as task -> width names each task with an attention head, and only those."""
        from prefinetune.families.family import get_family

        headed = [t.name for t in self.tasks if get_family(t.family).task_bank]
        dims = self.model.head_dim
        unknown, missing = sorted(set(dims) - set(headed)), [n for n in headed if n not in dims]
        if unknown or missing:
            raise ValueError(f"model.head_dim gives a width to each classification/regression task, whose heads are "
                             f"attention heads: {headed}; " + (f"it names others: {unknown}" if unknown else
                                                              f"it misses {missing}"))

    def _check_uncertainty_tasks(self) -> None:
        """MT-Uncertainty scores predictive distributions: a family without one (regression) cannot take part."""
        from prefinetune.families.family import get_family

        unscored = [t.name for t in self.tasks if not get_family(t.family).has_distribution]
        if unscored:
            raise ValueError(f"sampling.policy 'mt_uncertainty' scores the entropy of a task's predicted "
                             f"distribution; the families of these tasks have none (regression predicts a number): "
                             f"{unscored}. Use another policy or drop them")
        k = self.sampling.candidate_tasks
        if k is not None and k > len(self.tasks):
            raise ValueError(f"sampling.candidate_tasks={k} is more than the recipe's {len(self.tasks)} tasks")

    def upper_layer_sections(self) -> list[str]:
        """The sections set here that a layer above the run reads (its hooks): a run started without them
        would ignore what they say."""
        return ["finetune"] if self.finetune is not None else []

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"unknown task {name!r}; the recipe has {[t.name for t in self.tasks]}")

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    @property
    def checkpoints_dir(self) -> Path:
        """Ray Train's folder of this run (storage RUN_DIR/ray, name run.name): its checkpoint_* folders."""
        return self.run_dir / "ray" / self.run.name

    @property
    def shards_path(self) -> Path:
        return Path(self.data.shards_dir) if self.data.shards_dir else self.run_dir / "shards"


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "tuple"}


def _key(loc: tuple) -> str:
    """The recipe key of an error: pydantic's location less the names it gives union members (str, int,
    list[...], function-after[...]), which are not keys a user wrote."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or
                                                                 p.startswith("constrained-")))]
    return ".".join(parts) or "(top level)"


def _format_errors(err: ValidationError, source: str) -> str:
    """One line per bad key; a key that failed every member of a union gets one line with every reason."""
    reasons: dict[str, list[str]] = {}
    for e in err.errors():
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        if e["type"] == "string_type" and isinstance(e.get("input"), bool):
            msg += (f" (YAML read a bare word as the boolean {e['input']}: yes/no, true/false and on/off are "
                    "booleans unless quoted, e.g. ['no', 'yes'])")
        reasons.setdefault(_key(e["loc"]), [])
        if msg not in reasons[_key(e["loc"])]:
            reasons[_key(e["loc"])].append(msg)
    lines = [f"recipe {source} is not valid:"]
    lines += [f"  key '{key}': {'; or '.join(msgs)}" for key, msgs in reasons.items()]
    return "\n".join(lines)


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> RecipeConfig:
    """Validate a plain dict as a recipe; errors name `source` and each bad key."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {source} must be a mapping at the top level, got {type(data).__name__}")
    try:
        return RecipeConfig.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, source)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Read a YAML recipe, apply overrides, validate. Errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if isinstance(data, dict):
        apply_overrides(data, overrides or [])
    return recipe_from_dict(data, str(path))
