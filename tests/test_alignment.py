"""Wu, Zhang & Ré's per-task covariance alignment (model.alignment: per_task), one process, tiny BERT and
BART: at the identity it changes nothing; trained, it is exactly x @ R_t at the place the recipe names
(the word embeddings the encoder reads, or the states the heads read), BART's greedy decoding included;
only the trained task's matrix gets a gradient and no matrix is weight-decayed; an export reloads it and
fine-tuning reuses it; bad keys are refused.

    python -m pytest tests/test_alignment.py -q
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import family_splits, mixed_recipe, tiny_bart, tiny_bert  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.model.optim import param_groups
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData, slot_loss
from prefinetune.sampling.schedule import Slot

BACKBONES = {"bert": (tiny_bert, ["classification", "regression", "multiple_choice", "span", "tagging"]),
             "bart": (tiny_bart, ["classification", "span", "summarization"])}


def _models(kind: str, at: str):
    """(the model without alignment, the same model with it), heads initialised alike, and the data."""
    make, families = BACKBONES[kind]
    plain_recipe = recipe_from_dict(mixed_recipe(families))
    recipe = recipe_from_dict(mixed_recipe(families, model={"alignment": "per_task", "alignment_at": at}))
    torch.manual_seed(0)
    plain = build_model(plain_recipe, backbone=make()).eval()
    torch.manual_seed(0)
    aligned = build_model(recipe, backbone=make()).eval()
    return plain, aligned, recipe, TrainData(family_splits(recipe), recipe.tasks, pad_id=0)


def _batch(data, task, rows=(0, 1, 2)):
    return data.batch(Slot(0, task.name, rows), torch.device("cpu"))


def _outputs(model, i, batch):
    out = model(i, batch)["outputs"]
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("at", ["embeddings", "outputs"])
def test_at_the_identity_alignment_changes_nothing(kind, at):
    plain, aligned, recipe, data = _models(kind, at)
    assert torch.equal(aligned.alignment.weight, torch.eye(32).repeat(len(recipe.tasks), 1, 1))
    with torch.no_grad():
        for i, task in enumerate(recipe.tasks):
            batch = _batch(data, task)
            for got, want in zip(_outputs(aligned, i, batch), _outputs(plain, i, batch)):
                torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6, msg=lambda m: f"{task.name}: {m}")


def _rotate(model, seed: int = 1) -> None:
    """Each task's matrix a random orthogonal one (as training might leave it)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in range(model.alignment.weight.shape[0]):
            q, _ = torch.linalg.qr(torch.randn(32, 32, generator=generator))
            model.alignment.weight[t].copy_(q)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_aligned_embeddings_are_what_the_encoder_reads(kind):
    """Against the plain model run on inputs_embeds = (its own word embeddings) @ R_t."""
    plain, aligned, recipe, data = _models(kind, "embeddings")
    _rotate(aligned)
    with torch.no_grad():
        for i, task in enumerate(recipe.tasks):
            batch = _batch(data, task)
            r = aligned.alignment.weight[i]
            rotated = plain.backbone.get_input_embeddings()(batch["input_ids"]) @ r
            want = _outputs(plain, i, batch)
            got = _outputs(aligned, i, batch)
            moved = (aligned.pooled(i, batch) - plain.pooled(i, batch)).abs().max()
            assert moved > 1e-3 and not torch.equal(got[0], want[0]), task.name      # R_t does change the model
            plain_call = plain.backbone.forward

            def reads_rotated(**inputs):
                inputs.pop("input_ids", None)
                return plain_call(**{**inputs, "inputs_embeds": rotated})

            plain.backbone.forward = reads_rotated
            try:
                reference = _outputs(plain, i, batch)
            finally:
                plain.backbone.forward = plain_call
            for g, w in zip(got, reference):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_aligned_outputs_are_what_the_heads_read():
    """Against the plain model's heads run on the backbone's states @ R_t."""
    from prefinetune.families.family import Features

    plain, aligned, recipe, data = _models("bert", "outputs")
    _rotate(aligned)
    with torch.no_grad():
        for i, task in enumerate(recipe.tasks):
            batch = _batch(data, task)
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            states = plain.backbone(**inputs).last_hidden_state @ aligned.alignment.weight[i]
            features = Features(states, states[:, 0], batch["attention_mask"], plain._lm_logits)
            family = plain._family[task.family]
            want = family.head_outputs(getattr(plain, task.family), plain.tasks[i], batch, features)
            want = want if isinstance(want, tuple) else (want,)
            for g, w in zip(_outputs(aligned, i, batch), want):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("at", ["embeddings", "outputs"])
def test_bart_greedy_decoding_reads_the_alignment_as_training_does(at):
    """The first token generate() picks is the argmax of the teacher-forced logits at position 0 (the same
    aligned path); with the alignment ignored it would be the plain model's."""
    _, aligned, recipe, data = _models("bart", at)
    _rotate(aligned, seed=3)
    i = next(k for k, t in enumerate(recipe.tasks) if t.family == "summarization")
    batch = _batch(data, recipe.tasks[i], rows=tuple(range(8)))
    with torch.no_grad():
        first = aligned.generate(i, batch, max_new_tokens=1)[:, 0]
        teacher = aligned(i, {**batch, "labels": first[:, None]})["outputs"][:, 0].argmax(-1)
    assert torch.equal(first, teacher)


def test_only_the_trained_tasks_matrix_moves_and_none_is_decayed():
    _, aligned, recipe, data = _models("bert", "embeddings")
    aligned.train()
    loss, _ = slot_loss(aligned, 1, recipe.tasks[1], _batch(data, recipe.tasks[1]))
    loss.backward()
    grad = aligned.alignment.weight.grad
    assert grad[1].abs().sum() > 0
    assert all(torch.count_nonzero(grad[t]) == 0 for t in range(len(recipe.tasks)) if t != 1)
    groups = param_groups(aligned, weight_decay=0.1)
    home = next(g for g in groups if any(p is aligned.alignment.weight for p in g["params"]))
    assert home["weight_decay"] == 0.0 and home["lazy"]


def test_an_export_reloads_the_alignment_and_fine_tuning_reuses_it(tmp_path, data_root):
    """export_model -> load_exported gives the same outputs; no stock per-task folder pretends to hold the
    model; fine-tuning rte starts from rte's own matrix and head, and is refused without the alignment."""
    from prefinetune.export import load_exported
    from prefinetune.export.folder import export_model
    from prefinetune.finetune.head_reuse import start_heads
    from prefinetune.finetune.plan import FinetuneError
    from prefinetune.model.source import load_tokenizer
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe

    bert = save_tiny_bert(tmp_path / "bert")
    recipe = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [f"model.name_or_path={bert}",
                                                                  "model.alignment=per_task"]).model_dump()
    recipe["tasks"][:2] = recipe["tasks"][1::-1]          # rte second: its matrix is not row 0
    recipe = recipe_from_dict(recipe)
    torch.manual_seed(4)
    model = build_model(recipe)
    _rotate(model, seed=5)
    folder = export_model(model, load_tokenizer(str(bert)), tmp_path / "export", recipe)
    exported, info = load_exported(folder)
    assert info["model"]["alignment"] == "per_task" and info["model"]["alignment_at"] == "embeddings"
    assert all(t["folder"] is None and "alignment matrix" in t["folder_skipped"] for t in info["tasks"])
    assert "Covariance alignment" in (folder / "README.md").read_text()
    torch.testing.assert_close(exported.alignment.weight, model.alignment.weight, atol=0, rtol=0)

    from prefinetune.data.readers import read_split
    from prefinetune.families.family import get_family

    def finetune(*extra):
        return load_recipe("recipes/finetune/rte.yaml", [f"model.name_or_path={folder}", *extra])

    plain = finetune()
    with pytest.raises(FinetuneError, match=r"aligns 'rte''s features with its own matrix \(model.alignment: "
                                            r"per_task at embeddings\); reusing its head needs model.alignment="
                                            r"per_task model.alignment_at=embeddings"):
        start_heads(build_model(plain), plain)
    mine_recipe = finetune("model.alignment=per_task")
    mine = build_model(mine_recipe)
    assert "starts from the export's" in start_heads(mine, mine_recipe)
    task = mine_recipe.tasks[0]
    tokenizer = load_tokenizer(str(folder))
    records = read_split(task, "train", data_root).records[:4]
    family = get_family(task.family)
    batch = family.collate(family.tokenize(records, tokenizer, task, mine_recipe.model.max_length), 0, task)
    rte = next(t["head_index"] for t in info["tasks"] if t["name"] == "rte")
    assert rte == 1
    with torch.no_grad():
        torch.testing.assert_close(mine.eval()(0, batch)["outputs"], exported(rte, batch)["outputs"])


@pytest.mark.parametrize("model,message", [
    ({"alignment_at": "outputs"}, "model.alignment_at places the per-task alignment: it needs model.alignment"),
    ({"alignment": "each"}, "model.alignment"),
])
def test_bad_alignment_keys_are_refused_by_name(model, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(mixed_recipe(["classification"], model=model))
