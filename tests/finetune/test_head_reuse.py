"""Head reuse: a fine-tuning run from a prefinetune export starts from the export's head for its task
(per-dataset heads by name, the shared multiple-choice and span heads always), so the starting model
computes what the export computes on that task; and the initial dev score of a fine-tuning run equals
the export's own score. Tiny random BERT over MiniLM's tokenizer, real rows from ../shared/data.

    python -m pytest tests/finetune/test_head_reuse.py -q
"""
from __future__ import annotations

import json

import pytest
import torch

from prefinetune.data.readers import read_split
from prefinetune.export import load_exported
from prefinetune.export.folder import export_model
from prefinetune.families.family import get_family
from prefinetune.finetune.head_reuse import start_heads
from prefinetune.finetune.plan import FinetuneError
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import load_recipe, recipe_from_dict

FAMILIES = {"rte": "classification", "stsb": "regression", "copa": "multiple_choice", "xquad_en": "span",
            "ud_en_ewt": "tagging"}


@pytest.fixture(scope="module")
def export(tmp_path_factory, data_root):
    """An export of every encoder family's head (random, biases made non-zero) on a tiny BERT."""
    folder = tmp_path_factory.mktemp("reuse")
    bert = save_tiny_bert(folder / "bert")
    recipe = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [f"model.name_or_path={bert}"])
    torch.manual_seed(1)
    model = build_model(recipe)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.add_(torch.randn_like(p) * 0.5)
    return export_model(model, load_tokenizer(str(bert)), folder / "export", recipe), folder


def _finetune_recipe(task: str, model: str, *overrides: str):
    return load_recipe(f"recipes/finetune/{task}.yaml", [f"model.name_or_path={model}", *overrides])


def _batch(recipe, data_root, tokenizer, rows: int = 4) -> dict:
    task = recipe.tasks[0]
    family = get_family(task.family)
    records = read_split(task, "train", data_root).records[:rows]
    columns = family.tokenize(records, tokenizer, task, recipe.model.max_length)
    return family.collate({k: v[:rows] for k, v in columns.items()}, tokenizer.pad_token_id, task)


@pytest.mark.parametrize("task", list(FAMILIES))
def test_reused_head_computes_what_the_export_computes(export, data_root, task):
    folder, _ = export
    recipe = _finetune_recipe(task, str(folder))
    model = build_model(recipe)
    note = start_heads(model, recipe)
    assert "starts from the export's" in note and FAMILIES[task] in note
    exported, info = load_exported(folder)
    index = next(i for i, t in enumerate(exported.tasks) if t.name == task)
    batch = _batch(recipe, data_root, load_tokenizer(str(folder)))
    with torch.no_grad():
        mine, theirs = model.eval()(0, batch)["outputs"], exported(index, batch)["outputs"]
    for a, b in zip(*(x if isinstance(x, tuple) else (x,) for x in (mine, theirs))):
        torch.testing.assert_close(a, b)
    fresh = build_model(_finetune_recipe(task, str(folder), "finetune.reuse_head=false"))
    with torch.no_grad():
        other = fresh.eval()(0, batch)["outputs"]
    first = other[0] if isinstance(other, tuple) else other
    assert not torch.allclose(first, mine[0] if isinstance(mine, tuple) else mine)


def test_heads_that_cannot_be_reused_are_refused_by_name(export):
    folder, _ = export
    swapped = _finetune_recipe("rte", str(folder), "tasks.0.label_names=[not_entailment,entailment]")
    with pytest.raises(FinetuneError, match=r"head for 'rte' has labels \['entailment', 'not_entailment'\].*same "
                                            r"labels in the same order"):
        start_heads(build_model(swapped), swapped)
    unknown = _finetune_recipe("rte", str(folder), "finetune.head_from=mnli")
    with pytest.raises(FinetuneError, match=r"head_from='mnli': the export .* has no such task"):
        start_heads(build_model(unknown), unknown)
    wrong_family = _finetune_recipe("rte", str(folder), "finetune.head_from=stsb")
    with pytest.raises(FinetuneError, match=r"task 'stsb' is regression, task 'rte' is classification"):
        start_heads(build_model(wrong_family), wrong_family)
    r4f = _finetune_recipe("rte", str(folder), "r3f.enabled=true", "r3f.spectral_norm=true")
    with pytest.raises(FinetuneError, match="r3f.spectral_norm=False; reusing its head needs the same setting"):
        start_heads(build_model(r4f), r4f)


def test_a_plain_model_and_an_unmatched_task_get_a_fresh_head(export):
    folder, tmp = export
    plain = _finetune_recipe("rte", str(tmp / "bert"))
    assert "fresh classification head (the model is not a prefinetune export)" in start_heads(build_model(plain), plain)
    cb = _finetune_recipe("cb", str(folder))
    assert "fresh classification head (the export has no head for it)" in start_heads(build_model(cb), cb)


def test_initial_dev_score_of_a_finetune_run_is_the_exports_score(export, data_root, tmp_path):
    """Update 0 of a fine-tuning run from the export scores the export's own head: the same dev accuracy
    as evaluating the loaded export directly on the same rows."""
    from prefinetune.data.shards import open_split
    from prefinetune.finetune.local import finetune_in_process
    from prefinetune.finetune.resolve import resolve_finetune
    from prefinetune.run.driver import prepare_data, resolve_paths
    from prefinetune.run.evaluation import evaluate_task

    folder, _ = export
    recipe = resolve_paths(_finetune_recipe("rte", str(folder), f"data.root={data_root}",
                                            f"run.output_dir={tmp_path}", "finetune.epochs=0.01", "eval.max_rows=60"))
    prepare_data(recipe)
    recipe = resolve_finetune(recipe)
    final = finetune_in_process(recipe)
    start = json.loads((recipe.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert start["update"] == 0
    exported, _ = load_exported(folder)
    index = next(i for i, t in enumerate(exported.tasks) if t.name == "rte")
    direct = evaluate_task(exported, index, recipe.tasks[0], open_split(recipe.shards_path, "rte", "dev"),
                           0, 16, 60, torch.device("cpu"))
    assert start["dev/rte/accuracy"] == direct["accuracy"] and start["dev/rte/rows"] == direct["rows"] == 60
    assert {"dev/rte/accuracy", "heldout/rte/accuracy", "update"} <= set(final)


def test_a_head_from_a_shared_dense_export_computes_what_the_export_computes(tmp_path, data_root):
    """model.head_dense: shared keeps one dense layer for all classification tasks; fine-tuning rte
    from such an export starts from that layer and rte's own projection."""
    bert = save_tiny_bert(tmp_path / "bert")
    recipe = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [f"model.name_or_path={bert}",
                                                                  "model.head_dense=shared"]).model_dump()
    recipe["tasks"][:2] = recipe["tasks"][1::-1]       # rte second: its projection is not the bank's row 0
    recipe = recipe_from_dict(recipe)
    torch.manual_seed(2)
    model = build_model(recipe)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("classification."):
                p.add_(torch.randn_like(p) * 0.5)
    folder = export_model(model, load_tokenizer(str(bert)), tmp_path / "export", recipe)
    exported, info = load_exported(folder)
    assert info["model"]["head_dense"] == "shared" and exported.classification.dense_weight.shape[0] == 1
    finetune = _finetune_recipe("rte", str(folder))
    mine = build_model(finetune)
    assert "starts from the export's" in start_heads(mine, finetune)
    batch = _batch(finetune, data_root, load_tokenizer(str(folder)))
    index = next(i for i, t in enumerate(exported.tasks) if t.name == "rte")
    assert exported.tasks[index].family_index == 1
    with torch.no_grad():
        torch.testing.assert_close(mine.eval()(0, batch)["outputs"], exported(index, batch)["outputs"])


@pytest.fixture(scope="module")
def attention_export(tmp_path_factory):
    """An export whose classification/regression heads are DyPa-sized attention heads (model.head: attention)."""
    folder = tmp_path_factory.mktemp("attention")
    bert = save_tiny_bert(folder / "bert")
    recipe = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [
        f"model.name_or_path={bert}", "model.head=attention", "model.head_dim=dypa", "model.head_attention_heads=2",
        "model.dypa.sizes=[8,16,32,64]"])
    data = recipe.model_dump()
    data["tasks"][:2] = data["tasks"][1::-1]       # cola before rte: rte is row 1 of its width group
    recipe = recipe_from_dict(data)
    rows = {"cola": 100, "rte": 100, "stsb": 1000}     # stand-ins for the shards' rows: rte, cola 8 wide, stsb 64
    torch.manual_seed(3)
    model = build_model(recipe, rows=rows)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.add_(torch.randn_like(p) * 0.5)
    return export_model(model, load_tokenizer(str(bert)), folder / "export", recipe)


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_an_attention_head_is_reused_in_its_own_design(attention_export, data_root, task):
    """The reused head is rebuilt at the export's width and copied from its row of its width group: the
    starting model computes what the export computes; a recipe of another design is refused with the keys."""
    folder = attention_export
    exported, info = load_exported(folder)
    entry = next(t for t in info["tasks"] if t["name"] == task)
    with pytest.raises(FinetuneError, match=rf"is an attention head of width {entry['head_dim']}, 2 attention "
                                            rf"head\(s\), this recipe builds an fc head: reusing it needs model.head="
                                            rf"attention model.head_dim={entry['head_dim']} "
                                            r"model.head_attention_heads=2"):
        plain = _finetune_recipe(task, str(folder))
        start_heads(build_model(plain), plain)
    recipe = _finetune_recipe(task, str(folder), "model.head=attention", f"model.head_dim={entry['head_dim']}",
                              "model.head_attention_heads=2")
    mine = build_model(recipe)
    assert "starts from the export's" in start_heads(mine, recipe)
    batch = _batch(recipe, data_root, load_tokenizer(str(folder)))
    with torch.no_grad():
        torch.testing.assert_close(mine.eval()(0, batch)["outputs"], exported(entry["head_index"], batch)["outputs"])
    assert {t["name"]: (t["head_dim"], t["head_row"]) for t in info["tasks"] if "head_dim" in t} == \
        {"cola": (8, 0), "rte": (8, 1), "stsb": (64, 0)}
