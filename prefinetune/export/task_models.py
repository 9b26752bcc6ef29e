"""One task's head as a stock transformers model: `AutoModelForSequenceClassification` (classification,
regression), `AutoModelForMultipleChoice` (multiple choice), `AutoModelForQuestionAnswering` (span),
`AutoModelForTokenClassification` (tagging), for model types where the mapping is exact (same function,
not just same shapes).

prefinetune's head on the first token is dense -> tanh -> dropout -> out_proj. Exact homes for it:
- BERT: pooler (dense + tanh on [CLS]) -> dropout -> classifier, so pooler.dense <- dense and
  classifier <- out_proj (the backbone's own pooler, unused by the heads, is replaced).
- RoBERTa and its clones: RobertaClassificationHead is dropout -> dense -> tanh -> dropout -> out_proj,
  a direct mapping.
Other types (ELECTRA uses GELU, DistilBERT ReLU, ...) get no per-task folder: `task_model_support`
says why.

    model = task_model(backbone, head_state, label_names, head_dropout)   # or None
    model.save_pretrained("tasks/mnli")
"""
from __future__ import annotations

import copy

from torch import nn

__all__ = ["task_model_support", "task_model", "choice_model_support", "span_model_support", "span_task_model",
           "token_task_model_support", "token_task_model"]

# *ForTokenClassification is base model (no pooler) -> dropout -> classifier (linear) for these types:
# exactly the tagging head
TOKEN_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")

# head_state() key -> key in the task model, with {base} the base model's attribute name
_BERT_LIKE = {"dense.weight": "{base}.pooler.dense.weight", "dense.bias": "{base}.pooler.dense.bias",
              "out_proj.weight": "classifier.weight", "out_proj.bias": "classifier.bias"}
_ROBERTA_LIKE = {k: f"classifier.{k}" for k in ("dense.weight", "dense.bias", "out_proj.weight", "out_proj.bias")}
HEAD_MAPS = {"bert": _BERT_LIKE, "roberta": _ROBERTA_LIKE, "xlm-roberta": _ROBERTA_LIKE, "camembert": _ROBERTA_LIKE}
# *ForMultipleChoice is pooler (dense + tanh on the first token) -> dropout -> classifier (one score) for
# BERT and the RoBERTa family alike: the shared ranking head
CHOICE_MAPS = {t: _BERT_LIKE for t in ("bert", "roberta", "xlm-roberta", "camembert")}


def task_model_support(model_type: str) -> str | None:
    """None when `model_type` has an exact per-task mapping, else the reason it has none."""
    if model_type in HEAD_MAPS:
        return None
    return (f"no exact AutoModelForSequenceClassification mapping for model type {model_type!r}: "
            f"only {sorted(HEAD_MAPS)} classify with dense -> tanh -> out_proj on the first token")


def task_model(backbone: nn.Module, head_state: dict, label_names: list[str], head_dropout: float,
               kind: str = "sequence"):
    """A sequence-classification model (kind "sequence"; "regression": one output, problem_type regression;
    "choice": AutoModelForMultipleChoice, a score per choice) holding `backbone`'s weights and one task's
    head, or None when the backbone's type has no exact mapping."""
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

    mapping = (CHOICE_MAPS if kind == "choice" else HEAD_MAPS).get(backbone.config.model_type)
    if mapping is None:
        return None
    config = _task_config(backbone.config, label_names, head_dropout)
    if kind == "regression":
        config.problem_type = "regression"
    auto = AutoModelForMultipleChoice if kind == "choice" else AutoModelForSequenceClassification
    model = auto.from_config(config)
    base = model.base_model_prefix
    state = {f"{base}.{k}": v for k, v in backbone.state_dict().items()}
    state.update({target.format(base=base): head_state[src] for src, target in mapping.items()})
    wanted = set(model.state_dict())
    extra = sorted(k for k in state if k not in wanted)
    if any(not k.startswith(f"{base}.pooler.") for k in extra):  # RoBERTa classifiers drop the pooler
        raise ValueError(f"backbone weights with no place in {type(model).__name__}: {extra}")
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    return model.eval()


def choice_model_support(model_type: str) -> str | None:
    """None when `model_type` has an exact AutoModelForMultipleChoice mapping, else why not."""
    if model_type in CHOICE_MAPS:
        return None
    return (f"no exact AutoModelForMultipleChoice mapping for model type {model_type!r} "
            f"(checked: {sorted(CHOICE_MAPS)})")


def span_model_support(model_type: str) -> str | None:
    """None when `model_type` has an exact AutoModelForQuestionAnswering (qa_outputs on every token)."""
    if model_type in TOKEN_MODEL_TYPES:
        return None
    return (f"no exact AutoModelForQuestionAnswering mapping checked for model type {model_type!r} "
            f"(checked: {list(TOKEN_MODEL_TYPES)})")


def span_task_model(backbone: nn.Module, weight, bias):
    """A question-answering model holding `backbone`'s weights (no pooler) and the span head as qa_outputs
    (start, end logits per token; prefinetune also masks padding, which an answer never starts in)."""
    from transformers import AutoModelForQuestionAnswering

    config = copy.deepcopy(backbone.config)
    config.num_labels, config.architectures = 2, None
    return _per_token_model(AutoModelForQuestionAnswering.from_config(config), backbone,
                            {"qa_outputs.weight": weight, "qa_outputs.bias": bias})


def token_task_model_support(model_type: str) -> str | None:
    """None when `model_type` has an exact AutoModelForTokenClassification, else the reason it has none."""
    if model_type in TOKEN_MODEL_TYPES:
        return None
    return (f"no exact AutoModelForTokenClassification mapping checked for model type {model_type!r} "
            f"(checked: {list(TOKEN_MODEL_TYPES)})")


def token_task_model(backbone: nn.Module, weight, bias, label_names: list[str], head_dropout: float):
    """A token-classification model holding `backbone`'s weights (its pooler, which token classifiers
    have no place for, left out) and one tagging task's classifier."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_config(_task_config(backbone.config, label_names, head_dropout))
    return _per_token_model(model, backbone, {"classifier.weight": weight, "classifier.bias": bias})


def _per_token_model(model, backbone: nn.Module, head: dict):
    """`model` (a per-token stock class: no pooler) loaded with `backbone`'s weights and the `head` tensors."""
    base = model.base_model_prefix
    state = {f"{base}.{k}": v for k, v in backbone.state_dict().items() if not k.startswith("pooler.")}
    model.load_state_dict({**state, **head}, strict=True)
    return model.eval()


def _task_config(config, label_names: list[str], head_dropout: float):
    config = copy.deepcopy(config)
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    config.classifier_dropout = head_dropout
    config.architectures = None
    return config
