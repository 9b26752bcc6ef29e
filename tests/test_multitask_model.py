"""The multi-task model on tiny BERT, RoBERTa and BART: each family's outputs have the protocol's
shapes, padding is masked, and whatever task a micro-step runs, backward reaches every trainable
parameter (the same-graph property ZeRO relies on), while the inactive heads add exactly 0."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import TINY_BERT, family_splits, mixed_recipe, tiny_bart  # noqa: E402

from prefinetune.families import family_module
from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import recipe_from_dict
from prefinetune.run.step import TrainData, nonfinite_slot, slot_loss
from prefinetune.sampling.schedule import Slot

ENCODER_FAMILIES = ["classification", "regression", "multiple_choice", "span"]


def _roberta(seed=0):
    from transformers import AutoModel, RobertaConfig

    torch.manual_seed(seed)
    cfg = {**TINY_BERT, "max_position_embeddings": 80, "pad_token_id": 1, "type_vocab_size": 1}
    return AutoModel.from_config(RobertaConfig(**cfg))


def _bert(seed=0):
    from tiny import tiny_bert

    return tiny_bert(seed)


CASES = {"bert": (_bert, ENCODER_FAMILIES), "roberta": (_roberta, ENCODER_FAMILIES),
         "bart": (tiny_bart, ENCODER_FAMILIES + ["summarization"])}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_family_reaches_every_parameter(kind):
    make, families = CASES[kind]
    recipe = recipe_from_dict(mixed_recipe(families))
    model = build_model(recipe, backbone=make())
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    for i, task in enumerate(recipe.tasks):
        model.zero_grad(set_to_none=True)
        batch = data.batch(Slot(0, task.name, (0, 1, 2)), torch.device("cpu"))
        out = model(i, batch)
        assert float(out["inactive"]) == 0.0
        loss, raw = slot_loss(model, i, task, batch)
        loss.backward()
        missing = [n for n in trainable if dict(model.named_parameters())[n].grad is None]
        assert not missing, f"{kind}/{task.name}: no gradient for {missing[:5]}"
        _check_outputs(task, batch, out["outputs"], model)


def _check_outputs(task, batch, outputs, model):
    b = batch["input_ids"].shape[0]
    if task.family == "classification":
        assert outputs.shape == (b, task.num_labels)
    elif task.family == "regression":
        assert outputs.shape == (b,)
    elif task.family == "multiple_choice":
        k = batch["num_choices"]
        assert outputs.shape == (b // k, k)
        assert (outputs[~batch["choice_mask"]] < -1e30).all()
    elif task.family == "span":
        start, end = outputs
        assert start.shape == end.shape == batch["input_ids"].shape
        pad = batch["attention_mask"] == 0
        assert pad.any() and (start[pad] <= -1e4).all() and (end[pad] <= -1e4).all()
    else:
        assert outputs.shape == (*batch["labels"].shape, model.backbone.config.vocab_size)
    n = family_module(task.family).num_predictions(task, batch, outputs)
    expected = {"classification": task.num_labels, "regression": None,
                "multiple_choice": batch.get("num_choices"), "span": batch["input_ids"].shape[-1],
                "summarization": model.backbone.config.vocab_size}[task.family]
    assert n == expected


def test_bart_generate_is_greedy_decoding_of_the_lm_head():
    recipe = recipe_from_dict(mixed_recipe(["summarization"]))
    model = build_model(recipe, backbone=tiny_bart()).eval()
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    batch = data.batch(Slot(0, "summarization", (0, 1)), torch.device("cpu"))
    tokens = model.generate(0, batch, max_new_tokens=4)
    # Teacher-forcing the generated tokens must reproduce them as the argmax at every step.
    cfg = model.backbone.config
    for row in range(tokens.shape[0]):
        generated = tokens[row]
        stop = (generated == cfg.eos_token_id).nonzero()
        length = int(stop[0]) + 1 if len(stop) else len(generated)
        forced = {"input_ids": batch["input_ids"][row:row + 1], "attention_mask": batch["attention_mask"][row:row + 1],
                  "labels": generated[None, :length]}
        logits = model(0, forced)["outputs"]
        assert torch.equal(logits.argmax(-1)[0], generated[:length])


def test_a_new_model_trains_with_the_backbones_dropout_on(tmp_path):
    """from_pretrained returns the backbone in eval mode; the model must start in train mode throughout,
    else the backbone's dropout is off until the first evaluation (which then changed what training does)."""
    from prefinetune.model.tiny import save_tiny_bert

    folder = save_tiny_bert(tmp_path / "bert")
    recipe = recipe_from_dict({"model": {"name_or_path": str(folder)}, "train": {"updates": 1},
                               "tasks": [{"name": "t", "label_names": ["a", "b"], "splits": {"train": "t.jsonl"},
                                          "columns": {"text": "x", "label": "y"}}]})
    model = build_model(recipe)
    assert all(m.training for m in model.modules())
    ids = torch.randint(5, 100, (4, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch.manual_seed(0)
    first = model.backbone(**batch).last_hidden_state
    torch.manual_seed(1)
    assert not torch.equal(first, model.backbone(**batch).last_hidden_state)     # dropout is on


def test_no_hub_kernels_are_swapped_in_when_loaded_or_when_switching_train_and_eval(tmp_path):
    """transformers (with `kernels` installed) swaps layers for hub-downloaded kernels by default, again at
    each train()/eval() on a GPU: the first GPU run died at its first evaluation fetching one offline."""
    from transformers import AutoModel

    from prefinetune.model.tiny import save_tiny_bert

    folder = save_tiny_bert(tmp_path / "bert")
    recipe = recipe_from_dict({"model": {"name_or_path": str(folder)}, "train": {"updates": 1},
                               "tasks": [{"name": "t", "label_names": ["a", "b"], "splits": {"train": "t.jsonl"},
                                          "columns": {"text": "x", "label": "y"}}]})
    pytest.importorskip("kernels")          # what the project's loading must override: transformers' default
    default = AutoModel.from_pretrained(folder)
    assert default.use_kernels and default.kernels_mode is not None
    model = build_model(recipe)
    model.eval()
    model.train()
    assert not model.backbone.use_kernels and model.backbone.kernels_mode is None


def test_a_nan_in_an_idle_head_is_said_to_be_that_heads_not_the_slots_task():
    """The multiple-choice head's weights turned NaN: a classification slot's loss is NaN through the
    0-weighted idle term, and the message names the idle head, not the task; a NaN in the slot's own
    head is the task's, as before."""
    recipe = recipe_from_dict(mixed_recipe(["classification", "multiple_choice"]))
    model = build_model(recipe, backbone=_bert())
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    task = next(t for t in recipe.tasks if t.family == "classification")
    slot = Slot(0, task.name, (0, 1, 2))
    batch = data.batch(slot, torch.device("cpu"))
    with torch.no_grad():
        for p in model.multiple_choice.parameters():
            p.fill_(float("nan"))
    idle: dict = {}
    loss, raw = slot_loss(model, model.task_id(task.name), task, batch, idle=idle)
    said = nonfinite_slot(loss, slot, 4, raw, idle)
    assert said.startswith(f"update 5, slot 0 (task {task.name!r}, training rows [0, 1, 2]): the multiple_choice "
                           "head, idle in this slot, gave non-finite outputs (nan)"), said
    with torch.no_grad():
        for p in getattr(model, "classification").parameters():
            p.fill_(float("nan"))
    idle = {}
    loss, raw = slot_loss(model, model.task_id(task.name), task, batch, idle=idle)
    assert nonfinite_slot(loss, slot, 4, raw, idle).startswith(
        f"update 5, slot 0: task {task.name!r} gave a non-finite loss (nan) on its training rows [0, 1, 2]")
