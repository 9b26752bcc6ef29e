"""Wolfe & Lundgaard's attention heads (model.head: attention) and DyPa's widths, one process: the head
computes what torch's own nn.MultiheadAttention computes with its weights, padding changes nothing, the
parameter count is the paper's tenth of an fc head, DyPa's widths are the quartile bands by hand, every
parameter is in every task's graph, and bad recipe keys are refused by name.

    python -m pytest tests/test_attention_heads.py -q
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import family_splits, mixed_recipe, tiny_bert  # noqa: E402

from prefinetune.families.family import Features
from prefinetune.model.attention_heads import AttentionHeadBank, dypa_widths, task_widths
from prefinetune.model.heads import HeadBank
from prefinetune.model.multitask import build_model, resolve_head_widths
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData, slot_loss
from prefinetune.sampling.schedule import Slot


def _reference(bank: AttentionHeadBank, task: int, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The same head through torch.nn.MultiheadAttention (its own projections and padding mask), a loop mean."""
    group, row = bank.place[task]
    g, width, labels = bank.groups[group], bank.widths[task], bank.num_labels[task]
    attention = nn.MultiheadAttention(width, bank.attention_heads, batch_first=True)
    with torch.no_grad():
        attention.in_proj_weight.copy_(g.qkv_weight[row])
        attention.in_proj_bias.copy_(g.qkv_bias[row])
        attention.out_proj.weight.copy_(g.o_weight[row])
        attention.out_proj.bias.copy_(g.o_bias[row])
        x = states @ g.in_weight[row].T + g.in_bias[row]
        attended, _ = attention(x, x, x, key_padding_mask=~mask.bool(), need_weights=False)
        pooled = torch.stack([attended[i, mask[i].bool()].mean(dim=0) for i in range(len(states))])
        return pooled @ g.out_weight[row, :labels].T + g.out_bias[row, :labels]


@pytest.mark.parametrize("heads", [1, 4])
def test_each_task_computes_what_torch_multihead_attention_computes(heads):
    torch.manual_seed(0)
    bank = AttentionHeadBank(32, [3, 2, 1, 4], [16, 8, 16, 8], heads, dropout=0.0, init_std=0.3).eval()
    states = torch.randn(5, 7, 32)
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    for task in range(4):
        got = bank(states, mask, task)
        assert got.shape == (5, bank.num_labels[task])
        torch.testing.assert_close(got, _reference(bank, task, states, mask), atol=1e-5, rtol=1e-5)


def test_padding_changes_nothing():
    torch.manual_seed(1)
    bank = AttentionHeadBank(32, [2], [16], 2, dropout=0.0, init_std=0.3).eval()
    states, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.long)
    padded = torch.cat([states, torch.randn(2, 3, 32) * 100], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(bank(padded, padded_mask, 0), bank(states, mask, 0), atol=1e-5, rtol=1e-5)


def test_at_width_64_a_head_has_about_a_tenth_of_the_parameters_of_muppets():
    """Wolfe & Lundgaard: d_t = 64 gives about 10x fewer parameters than an fc head, at H = 768."""
    def count(module):
        return sum(p.numel() for p in module.parameters())

    attention, fc = AttentionHeadBank(768, [3], [64], 1, 0.1), HeadBank(768, [3], 0.1)
    assert count(attention) == 768 * 64 + 64 + 3 * 64 * 64 + 3 * 64 + 64 * 64 + 64 + 3 * 64 + 3
    assert 8.5 < count(fc) / count(attention) < 10


def test_dypa_gives_each_quartile_band_its_width():
    rows = {"a": 100, "b": 200, "c": 300, "d": 400, "e": 500}
    # numpy's linear quantiles of [100..500] at 0.25, 0.5, 0.75: 200, 300, 400 (a band's bound is in the band)
    assert dypa_widths(rows, [0.25, 0.5, 0.75], [128, 256, 512, 1024]) == \
        {"a": 128, "b": 128, "c": 256, "d": 512, "e": 1024}
    assert dypa_widths({"x": 10, "y": 10}, [0.5], [16, 32]) == {"x": 16, "y": 16}
    assert dypa_widths({"x": 1, "y": 1000}, [0.5], [16, 32]) == {"x": 16, "y": 32}


def test_dypa_recipe_needs_the_tasks_rows():
    recipe = recipe_from_dict(mixed_recipe(["classification", "regression"],
                                           model={"head": "attention", "head_dim": "dypa"}))
    with pytest.raises(ValueError, match=r"dypa sizes heads by training rows.*\['classification2', "
                                         r"'classification3', 'regression'\].*prepare the shards"):
        task_widths(recipe.model, ["classification2", "classification3", "regression"], None)
    widths = task_widths(recipe.model, ["classification2", "classification3", "regression"],
                         {"classification2": 5, "classification3": 50, "regression": 500})
    assert widths == {"classification2": 128, "classification3": 256, "regression": 1024}


def test_every_parameter_is_in_every_tasks_graph_and_untrained_rows_get_zero_gradient():
    families = ["classification", "regression", "multiple_choice", "span", "tagging"]
    recipe = recipe_from_dict(mixed_recipe(families, model={"head": "attention", "head_attention_heads": 2,
                                                            "head_dim": {"classification2": 8, "classification3": 16,
                                                                         "regression": 16}}))
    model = build_model(recipe, backbone=tiny_bert())
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    params = dict(model.named_parameters())
    for i, task in enumerate(recipe.tasks):
        model.zero_grad(set_to_none=True)
        loss, _ = slot_loss(model, i, task, data.batch(Slot(0, task.name, (0, 1, 2)), torch.device("cpu")))
        loss.backward()
        assert not [n for n, p in params.items() if p.requires_grad and p.grad is None], task.name
        mine = (f"{task.family}.groups.d{recipe.model.head_dim[task.name]}."
                if task.name in recipe.model.head_dim else None)
        for name, p in params.items():
            if name.startswith(("classification.groups.", "regression.groups.")):
                assert (p.grad.abs().sum() > 0) == (mine is not None and name.startswith(mine)), (task.name, name)


def test_a_single_task_bank_reads_the_features_states():
    bank = AttentionHeadBank(32, [2], [8], 1, 0.0).eval()
    states, mask = torch.randn(3, 4, 32), torch.ones(3, 4, dtype=torch.long)
    features = Features(states, states[:, 0], mask, None)
    torch.testing.assert_close(bank.read(features, 0), bank(states, mask, 0))


@pytest.mark.parametrize("model,message", [
    ({"head_dim": 32}, "model.head_dim sizes the attention head: it needs model.head: attention"),
    ({"head_attention_heads": 2}, "model.head_attention_heads sizes the attention head"),
    ({"head": "attention", "head_dense": "shared"}, "model.head_dense: shared shares the fc head's dense layer"),
    ({"head": "attention", "head_dim": 30, "head_attention_heads": 4}, r"must divide every head width; \[30\]"),
    ({"head": "attention", "head_dim": 64, "dypa": {}}, "model.dypa sizes heads only with model.head_dim: dypa"),
    ({"head": "attention", "head_dim": "dypa", "dypa": {"sizes": [8, 16]}}, "needs 4 widths"),
    ({"head": "attention", "head_dim": "dypa", "dypa": {"bounds": [0.5, 0.25], "sizes": [8, 16, 32]}},
     "bounds must increase"),
    ({"head": "attention", "head_dim": {"classification2": 8}}, r"it misses \['classification3', 'regression'\]"),
    ({"head": "attention", "head_dim": {"classification2": 8, "classification3": 8, "regression": 8, "span": 8}},
     r"it names others: \['span'\]"),
])
def test_bad_head_keys_are_refused_by_name(model, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(mixed_recipe(["classification", "regression", "span"], model=model))


def test_dypa_sizes_a_runs_heads_from_its_prepared_shards(tmp_path, data_root):
    """What the worker and the export build: DyPa widths from the train rows of the prepared manifest (rte
    2,490, stsb 5,749, cola 8,551 rows: the three quantile bands of three tasks), no rows passed."""
    import json

    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe
    from prefinetune.run.driver import prepare_data, resolve_paths

    data = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [
        f"model.name_or_path={save_tiny_bert(tmp_path / 'bert')}", f"data.root={data_root}",
        f"run.output_dir={tmp_path / 'out'}", "model.head=attention", "model.head_dim=dypa",
        "model.dypa={bounds: [0.25, 0.5, 0.75], sizes: [8, 16, 32, 64]}"]).model_dump(mode="json")
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("rte", "cola", "stsb")]
    recipe = resolve_paths(recipe_from_dict(data))
    prepare_data(recipe)
    manifest = json.loads((recipe.shards_path / "manifest.json").read_text())
    rows = {n: manifest["tasks"][n]["splits"]["train"]["rows"] for n in ("rte", "cola", "stsb")}
    assert rows == {"rte": 2490, "cola": 8551, "stsb": 5749}
    model = build_model(recipe)
    assert model.attention.widths == {"rte": 8, "stsb": 16, "cola": 64}
    assert model.classification.groups["d64"].in_weight.shape[0] == 1 and "d16" in model.regression.groups
    resolved = resolve_head_widths(recipe)            # what the driver runs, records and checkpoints
    assert resolved.model.head_dim == {"rte": 8, "cola": 64, "stsb": 16} and resolved.model.dypa is None
    assert recipe_from_dict(resolved.model_dump(mode="json")) == resolved
    assert resolve_head_widths(resolved) == resolved
