"""`finetune` for every family, from a plain model and from an export, in one process (what a compare
trial runs): real rows from ../shared/data, tiny random BERT (BART for summarization) over MiniLM's
tokenizer. Each run reports its select and test splits with its family's metrics (the Ray path and its
exported folder: tests/finetune/test_finetune_job.py).

    python -m pytest tests/finetune/test_finetune_families.py -q
"""
from __future__ import annotations

import pytest
import torch

from prefinetune.export.folder import export_model
from prefinetune.finetune.local import finetune_in_process
from prefinetune.finetune.resolve import resolve_finetune
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.model.tiny import save_tiny_bart, save_tiny_bert
from prefinetune.recipe.config import load_recipe
from prefinetune.run.driver import prepare_data, resolve_paths

METRICS = {"rte": ("dev", "heldout", "accuracy"), "stsb": ("dev", "heldout", "pearson"),
           "copa": ("dev", "heldout", "accuracy"), "xquad_en": ("dev", "heldout", "f1"),
           "ud_en_ewt": ("heldout", "test", "accuracy"), "aeslc": ("dev", "test", "rouge1")}
SHORT = ["finetune.epochs=0.02", "eval.max_rows=12", "model.max_length=96"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"bert": plain, "bart": plain, "bert_export": every encoder family, "bart_export": with aeslc}."""
    root = tmp_path_factory.mktemp("models")
    out = {"bert": save_tiny_bert(root / "bert"), "bart": save_tiny_bart(root / "bart")}
    for kind, recipe_path in (("bert", "recipes/shared_data_no_summ_cpu.yaml"),
                              ("bart", "recipes/finetune/aeslc.yaml")):
        recipe = load_recipe(recipe_path, [f"model.name_or_path={out[kind]}"])
        torch.manual_seed(3)
        out[f"{kind}_export"] = export_model(build_model(recipe), load_tokenizer(str(out[kind])),
                                             root / f"{kind}_export", recipe)
    return out


def _finetune(task: str, model, data_root, out_dir) -> tuple:
    recipe = load_recipe(f"recipes/finetune/{task}.yaml", [f"model.name_or_path={model}", f"data.root={data_root}",
                                                           f"run.output_dir={out_dir}", *SHORT])
    recipe = resolve_paths(recipe)
    prepare_data(recipe)
    recipe = resolve_finetune(recipe)
    return recipe, finetune_in_process(recipe)


@pytest.mark.slow
@pytest.mark.parametrize("start", ["plain", "export"])
@pytest.mark.parametrize("task", list(METRICS))
def test_finetune_every_family(models, data_root, tmp_path, task, start):
    kind = "bart" if task == "aeslc" else "bert"
    recipe, metrics = _finetune(task, models[kind if start == "plain" else f"{kind}_export"], data_root, tmp_path)
    select, test, metric = METRICS[task]
    assert metrics["update"] == recipe.train.updates >= 1
    for split in (select, test):
        assert f"{split}/{task}/{metric}" in metrics and metrics[f"{split}/{task}/rows"] > 0
