"""LoRA in fine-tuning (finetune.lora, peft): a real one-process fine-tuning run (DeepSpeed ZeRO-2 on a
one-rank gloo group, what a compare trial runs) of a tiny BERT on real RTE rows trains only the adapters
and the head (every backbone weight bit-identical to the model's folder); its checkpoint exports as a
merged stock model that computes the trained model's logits, and the adapter alone loads with peft onto
the base model as the same backbone. Recipe errors and compare's grid over LoRA are checked too.

    python -m pytest tests/finetune/test_lora.py -q
"""
from __future__ import annotations

import json

import pytest
import torch

from prefinetune.export import export_from_checkpoint
from prefinetune.finetune.hooks import FinetuneHooks
from prefinetune.finetune.local import one_process_group
from prefinetune.finetune.resolve import resolve_finetune
from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import RecipeError, load_recipe
from prefinetune.run.driver import prepare_data, resolve_paths
from prefinetune.run.worker import LocalSession, run_worker

LORA = "finetune.lora={r: 4, alpha: 8, target_modules: [query, value]}"


class KeepEngine(LocalSession):
    """A one-process session that keeps the engine of its last report (the trained model)."""

    def report(self, engine, update, client_state, metrics, score=None):
        super().report(engine, update, client_state, metrics, score)
        self.engine = engine


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("lora")
    base = save_tiny_bert(root / "bert", seed=1)
    recipe = load_recipe("recipes/finetune/rte.yaml", [
        f"model.name_or_path={base}", f"data.root={data_root}", f"run.output_dir={root}", "finetune.epochs=0.03",
        "eval.max_rows=8", "model.max_length=64", "optim.lr=1e-2", LORA])
    recipe = resolve_paths(recipe)
    prepare_data(recipe)
    recipe = resolve_finetune(recipe)
    session = KeepEngine()
    one_process_group()
    run_worker(recipe, session, hooks=FinetuneHooks())
    session.engine.save_checkpoint(str(root / "checkpoint"))
    hooks = FinetuneHooks()       # what the driver's export does with the run's hooks
    export_from_checkpoint(root / "checkpoint", recipe, root / "export", shape=hooks.shape_model,
                           unshape=hooks.unshape_model)
    return base, recipe, session.engine.module.eval(), root


def test_only_the_adapters_and_the_head_train(trained):
    from transformers import AutoModel

    base, recipe, model, _ = trained
    start = AutoModel.from_pretrained(base).state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or not n.startswith("backbone.") for n in trainable)
    assert {n for n in trainable if not n.startswith("backbone.")} == {
        n for n, _ in model.named_parameters() if not n.startswith("backbone.")}
    frozen = {n.removeprefix("backbone.base_model.model.").replace(".base_layer", ""): p
              for n, p in model.named_parameters() if n.startswith("backbone.") and ".lora_" not in n}
    assert frozen.keys() == start.keys() - {k for k in start if "position_ids" in k}
    assert all(torch.equal(p.detach(), start[k]) for k, p in frozen.items())       # bit-identical
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert len(lora_b) == 2 * 2 and all(p.abs().sum() > 0 for p in lora_b)          # trained from zero


def test_the_merged_export_computes_the_trained_models_logits_and_the_adapter_loads_alone(trained):
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from prefinetune.export import load_exported

    base, recipe, model, root = trained
    out = root / "export"
    tokens = AutoTokenizer.from_pretrained(out)(["A man sleeps.", "Two dogs run in the park."],
                                                ["Nobody sleeps.", "Animals are outside."], padding=True,
                                                return_tensors="pt")
    with torch.no_grad():
        want = model(0, dict(tokens))["outputs"]
        stock = AutoModelForSequenceClassification.from_pretrained(out / "tasks" / "rte").eval()
        torch.testing.assert_close(stock(**tokens).logits, want, atol=1e-5, rtol=0)
        loaded, info = load_exported(out)
        torch.testing.assert_close(loaded(0, dict(tokens))["outputs"], want, atol=1e-5, rtol=0)
        assert info["lora"] == {"folder": "adapter", "r": 4, "alpha": 8.0, "target_modules": ["query", "value"],
                                "merged": True, "base_model": f"local:{base.name}"}
        assert not any("lora" in k for k in AutoModel.from_pretrained(out).state_dict())   # a stock backbone
        adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(base), out / "adapter").eval()
        merged = AutoModel.from_pretrained(out).eval()
        torch.testing.assert_close(adapted(**tokens).last_hidden_state, merged(**tokens).last_hidden_state,
                                   atol=1e-5, rtol=0)
    assert "Fine-tuned with LoRA (r 4, alpha 8, on query, value): the adapters are merged into this backbone; " \
           "the adapter alone is in `adapter/`." in (out / "README.md").read_text()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["peft_type"], config["base_model_name_or_path"]) == (4, "LORA", f"local:{base.name}")


def test_prefinetune_export_merges_a_lora_checkpoint_as_the_run_did(trained, tmp_path):
    from prefinetune.cli import main

    _, recipe, _, root = trained
    (tmp_path / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")))
    assert main(["export", "--recipe", str(tmp_path / "recipe.json"), "--checkpoint", str(root / "checkpoint"),
                 "--out", str(tmp_path / "export")]) == 0
    for name in ("model.safetensors", "heads.safetensors", "adapter/adapter_model.safetensors"):
        assert (tmp_path / "export" / name).read_bytes() == (root / "export" / name).read_bytes(), name


def test_lora_never_adapts_the_unused_pooler_and_a_bad_target_is_refused_before_work(trained):
    from prefinetune.finetune.lora import add_lora, check_lora
    from prefinetune.model.multitask import build_model

    base, recipe, _, _ = trained
    wide = recipe.model_copy(deep=True)
    wide.finetune.lora.target_modules = ["query", "value", "dense"]
    model = build_model(wide)
    add_lora(model, wide.finetune.lora)
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if ".lora_" in n}
    assert any(".output.dense" in n for n in adapted) and not any("pooler" in n for n in adapted)
    wide.finetune.lora.target_modules = ["nope"]
    with pytest.raises(RecipeError, match="finetune.lora does not fit the bert backbone of .*No modules were "
                                          "targeted for adaptation"):
        check_lora(wide)


def test_lora_on_a_camtl_backbone_adapts_only_the_layers_camtl_trains(trained):
    """CA-MTL freezes the lower layers; LoRA on such a model (and its check) leaves them without adapters,
    so they stay the export's, and adapts every conditioned layer above."""
    from prefinetune.finetune.lora import add_lora, check_lora
    from prefinetune.model.multitask import build_model
    from prefinetune.recipe.config import CamtlSection

    _, recipe, _, _ = trained
    camtl = recipe.model_copy(deep=True)
    camtl.model = camtl.model.model_copy(update={"conditioning": "camtl"})
    model = build_model(camtl)
    layers, frozen = len(model.backbone.encoder.layer), model.conditioning.frozen
    assert 0 < frozen < layers
    said = add_lora(model, camtl.finetune.lora)
    adapted = {int(n.split("encoder.layer.")[1].split(".")[0]) for n, _ in model.named_parameters() if ".lora_" in n}
    assert adapted == set(range(frozen, layers)), adapted
    assert f"(not in the {frozen} CA-MTL-frozen lower layers)" in said
    camtl.finetune.lora.target_modules = ["query", "value"]
    check_lora(camtl)
    camtl.model = camtl.model.model_copy(update={"camtl": CamtlSection(freeze_bottom_layers=layers)})
    with pytest.raises(RecipeError, match="finetune.lora does not fit the bert backbone .*No modules were targeted"):
        check_lora(camtl)       # every layer frozen: nothing left to adapt


def test_lora_keys_are_checked_and_compare_can_search_them(tmp_path, monkeypatch):
    import sys

    from prefinetune.finetune.grid import trial_grid, trial_recipe

    with pytest.raises(RecipeError, match=r"finetune.lora.r"):
        load_recipe("recipes/finetune/rte.yaml", ["finetune.lora={r: 0}"])
    with pytest.raises(RecipeError, match=r"finetune.lora.rank"):
        load_recipe("recipes/finetune/rte.yaml", ["finetune.lora={rank: 8}"])
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "peft", None)          # what Python does when it cannot import it
        with pytest.raises(RecipeError, match=r"finetune.lora.*LoRA needs peft, which is not installed: pip "
                                              r"install 'prefinetune\[lora\]'"):
            load_recipe("recipes/finetune/rte.yaml", ["finetune.lora={r: 8}"])
    base = load_recipe("recipes/finetune/rte.yaml").model_dump(mode="json")
    trials = trial_grid({"m": "pkg:x"}, [1.0], 1, {"finetune.lora": [None, {"r": 2, "alpha": 4}]})
    recipes = [trial_recipe(base, t, tmp_path) for t in trials]
    assert recipes[0].finetune.lora is None and (recipes[1].finetune.lora.r, recipes[1].finetune.lora.alpha) == (2, 4)
