"""CA-MTL's task-conditioned transformer (model.conditioning: camtl), one process, tiny BERT and RoBERTa: at
the start it computes what the pretrained model computes; each part, made non-trivial, computes its
definition (the attention bias against attention written out by hand); the bottom layers are frozen and
every conditioning parameter is in every task's graph, a task's embedding row only in its own; an export
reloads it and fine-tuning starts from it (the task's own embedding, a named one or the mean); BART and
bad keys are refused by name.

    python -m pytest tests/test_camtl.py -q
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_multitask_model import _roberta  # noqa: E402
from tiny import family_splits, mixed_recipe, tiny_bart, tiny_bert  # noqa: E402

from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData, slot_loss
from prefinetune.sampling.schedule import Slot

FAMILIES = ["classification", "regression", "multiple_choice", "span", "tagging"]
SMALL = {"attention_blocks": 2, "task_embedding_dim": 8, "bottleneck_dim": 8}


def _recipe(**camtl):
    return recipe_from_dict(mixed_recipe(FAMILIES, model={"conditioning": "camtl", "camtl": {**SMALL, **camtl}}))


def _batch(data, task, rows=(0, 1, 2)):
    return data.batch(Slot(0, task.name, rows), torch.device("cpu"))


@pytest.mark.parametrize("make", [tiny_bert, _roberta], ids=["bert", "roberta"])
def test_at_the_start_the_conditioned_model_is_the_pretrained_one(make):
    recipe = _recipe()
    plain_recipe = recipe_from_dict(mixed_recipe(FAMILIES))
    torch.manual_seed(0)
    plain = build_model(plain_recipe, backbone=make()).eval()
    conditioned = build_model(recipe, backbone=make()).eval()
    conditioned.load_state_dict({**conditioned.state_dict(), **{k: v for k, v in plain.state_dict().items()}})
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=1 if make is _roberta else 0)
    with torch.no_grad():
        for i, task in enumerate(recipe.tasks):
            batch = _batch(data, task)
            torch.testing.assert_close(conditioned.pooled(i, batch), plain.pooled(i, batch), atol=2e-6, rtol=1e-5)


def _randomise(conditioning, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conditioning.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)


def _conditioned(**camtl):
    recipe = _recipe(freeze_bottom_layers=1, **camtl)
    model = build_model(recipe, backbone=tiny_bert()).eval()
    _randomise(model.conditioning)
    model.conditioning.task = 1
    return recipe, model


def _film(film, z):
    return 1 + film.gamma @ z, film.beta @ z


def test_conditional_attention_adds_the_block_diagonal_task_bias_to_the_scores():
    """Layer 1's self-attention (the conditioned one) against scaled dot-product attention by hand, its scores
    plus M(z) = blockdiag(A_n * gamma_n(z) + beta_n(z)) cut to the sequence, padding masked."""
    _, model = _conditioned(conditional_alignment=False, conditional_layer_norm=False, conditional_bottleneck=False)
    attention = model.backbone.encoder.layer[1].attention.self
    parts, z = model.conditioning.layers[0], model.conditioning.task_embedding[1]
    states = torch.randn(2, 12, 32)
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, 9:] = False
    with torch.no_grad():
        got = attention(states, attention_mask=real[:, None, None, :].expand(2, 1, 12, 12))[0]
        blocks = [parts.blocks[n] * _film(f, z)[0][None, :] + _film(f, z)[1][None, :]
                  for n, f in enumerate(parts.attention_film)]
        bias = torch.zeros(12, 12)        # max_length 16 / 2 blocks: 8 positions a block, 12 span both
        for i in range(12):
            for j in range(12):
                if i // 8 == j // 8:
                    bias[i, j] = blocks[i // 8][i % 8, j % 8]
        heads = lambda x: x.view(2, 12, 2, 16).transpose(1, 2)                      # noqa: E731
        q, k, v = heads(attention.query(states)), heads(attention.key(states)), heads(attention.value(states))
        scores = q @ k.transpose(-1, -2) / math.sqrt(16) + bias
        scores = scores.masked_fill(~real[:, None, None, :], float("-inf"))
        want = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 12, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert bias.abs().max() > 0.01


def test_conditional_layer_norm_modulates_the_pretrained_affine():
    _, model = _conditioned(conditional_attention=False, conditional_alignment=False, conditional_bottleneck=False)
    norm = model.backbone.encoder.layer[1].output.LayerNorm
    film, z = model.conditioning.layers[0].norm_film[1], model.conditioning.task_embedding[1]
    x = torch.randn(3, 4, 32)
    with torch.no_grad():
        gamma, beta = _film(film, z)
        torch.testing.assert_close(norm(x), F.layer_norm(x, (32,), norm.weight * gamma, norm.bias + beta, norm.eps))
        assert not torch.allclose(norm(x), F.layer_norm(x, (32,), norm.weight, norm.bias, norm.eps), atol=1e-3)
    frozen = model.backbone.encoder.layer[0].output.LayerNorm        # below the cut: the pretrained norm
    torch.testing.assert_close(frozen(x), F.layer_norm(x, (32,), frozen.weight, frozen.bias, frozen.eps))


def test_conditional_bottleneck_and_alignment_are_their_formulas():
    recipe, model = _conditioned(conditional_attention=False, conditional_layer_norm=False)
    c, z = model.conditioning, model.conditioning.task_embedding[1]
    layer, embeddings = model.backbone.encoder.layer[1], model.backbone.embeddings
    states, ids = torch.randn(2, 4, 32), torch.tensor([[2, 5, 6, 7], [2, 8, 9, 10]])
    with torch.no_grad():
        parts = c.layers[0]
        up = parts.up.clone()
        parts.up.zero_()                                  # the bottleneck adds nothing: the layer's own output
        raw = layer(states)
        parts.up.copy_(up)
        gamma, beta = _film(parts.bottleneck_film, z)
        want = raw + F.gelu((raw @ parts.down.T) * gamma + beta) @ parts.up.T
        torch.testing.assert_close(layer(states), want, atol=1e-5, rtol=1e-5)

        matrix = c.align_matrix.clone()
        film = {k: v.clone() for k, v in c.align_film.state_dict().items()}
        c.align_matrix.copy_(torch.eye(32))
        c.align_film.gamma.zero_()
        c.align_film.beta.zero_()
        plain = embeddings(input_ids=ids)                 # the identity alignment: the embedding layer's output
        c.align_matrix.copy_(matrix)
        c.align_film.load_state_dict(film)
        gamma, beta = _film(c.align_film, z)
        torch.testing.assert_close(embeddings(input_ids=ids), (plain @ matrix) * gamma + beta, atol=1e-5, rtol=1e-5)


def test_the_bottom_layers_are_frozen_and_only_the_running_tasks_embedding_trains():
    recipe = _recipe(freeze_bottom_layers="half")
    model = build_model(recipe, backbone=tiny_bert())
    _randomise(model.conditioning)        # at the start every FiLM map is 0, so z gets no gradient yet
    data = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert {n.split(".")[3] for n in frozen if n.startswith("backbone.encoder.layer.")} == {"0"}
    assert model.conditioning.frozen == 1 and len(model.conditioning.layers) == 1
    params = dict(model.named_parameters())
    for i, task in enumerate(recipe.tasks):
        model.zero_grad(set_to_none=True)
        loss, _ = slot_loss(model, i, task, _batch(data, task))
        loss.backward()
        assert not [n for n, p in params.items() if p.requires_grad and p.grad is None], task.name
        rows = params["conditioning.task_embedding"].grad
        assert [bool(rows[t].abs().sum() > 0) for t in range(len(recipe.tasks))] == \
            [t == i for t in range(len(recipe.tasks))], task.name


def test_bart_and_bad_keys_are_refused_by_name(tmp_path):
    from prefinetune.model.tiny import save_tiny_bart
    from prefinetune.run.driver import check_backbone

    bart_recipe = recipe_from_dict(mixed_recipe(["classification"], model={"conditioning": "camtl"}))
    with pytest.raises(ValueError, match="BERT/RoBERTa-type encoder .*; bart with .* attention is not one"):
        build_model(bart_recipe, backbone=tiny_bart())
    folder = save_tiny_bart(tmp_path / "bart")
    data = bart_recipe.model_dump()
    data["model"]["name_or_path"] = str(folder)
    with pytest.raises(RecipeError, match="model.conditioning camtl conditions .* an encoder-decoder"):
        check_backbone(recipe_from_dict(data))
    with pytest.raises(RecipeError, match="model.camtl sets CA-MTL's conditioning: it needs model.conditioning"):
        recipe_from_dict(mixed_recipe(["classification"], model={"camtl": {"task_embedding_dim": 8}}))
    with pytest.raises(ValueError, match="freeze_bottom_layers=3 is more than the backbone's 2 layers"):
        build_model(_recipe(freeze_bottom_layers=3), backbone=tiny_bert())
    with pytest.raises(RecipeError, match="attention_blocks"):
        _recipe(attention_blocks=0)


def test_an_export_reloads_the_conditioning_and_fine_tuning_starts_from_it(tmp_path, data_root):
    """export_model -> load_exported gives the same outputs (no stock task folder; the card says the stock
    backbone alone is not the model); fine-tuning rte starts from the export's conditioning and rte's own
    embedding, or the mean, or a named task's, and is refused without the same conditioning."""
    from prefinetune.data.readers import read_split
    from prefinetune.export import load_exported
    from prefinetune.export.folder import export_model
    from prefinetune.families.family import get_family
    from prefinetune.finetune.conditioning import check_conditioning
    from prefinetune.finetune.hooks import FinetuneHooks
    from prefinetune.finetune.plan import FinetuneError
    from prefinetune.model.source import load_tokenizer
    from prefinetune.model.tiny import save_tiny_bert
    from prefinetune.recipe.config import load_recipe

    bert = save_tiny_bert(tmp_path / "bert")
    camtl = [f"model.camtl.{k}={v}" for k, v in SMALL.items()]
    recipe = load_recipe("recipes/shared_data_no_summ_cpu.yaml", [f"model.name_or_path={bert}",
                                                                  "model.conditioning=camtl", *camtl])
    torch.manual_seed(4)
    model = build_model(recipe).eval()
    _randomise(model.conditioning, seed=2)
    folder = export_model(model, load_tokenizer(str(bert)), tmp_path / "export", recipe)
    exported, info = load_exported(folder)
    assert info["model"]["conditioning"] == "camtl" and info["model"]["camtl_frozen_layers"] == 1
    assert all(t["folder"] is None and "CA-MTL" in t["folder_skipped"] for t in info["tasks"])
    assert "is not the trained model" in (folder / "README.md").read_text()

    def finetune(*extra):
        return load_recipe("recipes/finetune/rte.yaml", [f"model.name_or_path={folder}", *extra])

    with pytest.raises(FinetuneError, match=r"is CA-MTL-conditioned .* fine-tuning it needs model.conditioning=camtl "
                                            r"model.camtl.conditional_attention=True"):
        check_conditioning(finetune())
    with pytest.raises(FinetuneError, match=r"conditional attention spans 128 positions .* needs model.max_length=128 "
                                            r"\(this recipe has 64\)"):
        check_conditioning(finetune("model.conditioning=camtl", *camtl, "model.max_length=64"))
    with pytest.raises(FinetuneError, match=r"task_embedding_from='nope': the export .* has no such task"):
        check_conditioning(finetune("model.conditioning=camtl", *camtl, "finetune.task_embedding_from=nope"))
    task = finetune().tasks[0]
    tokenizer = load_tokenizer(str(folder))
    family = get_family(task.family)
    records = read_split(task, "train", data_root).records[:4]
    batch = family.collate(family.tokenize(records, tokenizer, task, recipe.model.max_length), 0, task)
    rte = next(t["head_index"] for t in info["tasks"] if t["name"] == "rte")
    table = exported.conditioning.task_embedding.detach()
    for extra, start in (((), table[rte]), (("finetune.task_embedding_from=mean",), table.mean(dim=0)),
                         (("finetune.task_embedding_from=cola",), table[1])):
        mine_recipe = finetune("model.conditioning=camtl", *camtl, *extra)
        check_conditioning(mine_recipe)
        mine = build_model(mine_recipe)
        said = FinetuneHooks().start_model(mine, mine_recipe)
        assert "CA-MTL conditioning from the export" in said
        assert torch.equal(mine.conditioning.task_embedding[0], start)
        if not extra:       # its own embedding and head: the export's function on rte
            with torch.no_grad():
                torch.testing.assert_close(mine.eval()(0, batch)["outputs"], exported(rte, batch)["outputs"])

    # compare checks every grid point before any trial: here the second's conditioning is not the export's
    from prefinetune.finetune.compare import prepare_models
    from prefinetune.finetune.grid import trial_grid, trial_recipe

    base = finetune("model.conditioning=camtl", *camtl, f"data.root={data_root}",
                    "finetune.grid={model.camtl.task_embedding_dim: [8, 16]}").model_dump(mode="json")
    trials = trial_grid({"export": str(folder)}, [1.0], 1, base["finetune"]["grid"])
    assert trial_recipe(base, trials[0], tmp_path).model.camtl.task_embedding_dim == 8
    with pytest.raises(FinetuneError, match="is CA-MTL-conditioned"):
        prepare_models(base, {"export": str(folder)}, tmp_path / "compare")


def test_a_new_task_starts_from_its_family_embeddings_where_it_reuses_a_shared_head():
    """embedding_source on a hand-written export: a task the export has by name (or finetune.head_from) starts
    from its own embedding; a new multiple-choice task from the mean of the export's multiple-choice tasks (the
    shared head it reuses was trained on their conditioning); a new classification task from the mean of all;
    a head_from the export lacks is refused even with reuse off."""
    from prefinetune.finetune.conditioning import embedding_source
    from prefinetune.finetune.plan import FinetuneError
    from prefinetune.recipe.config import load_recipe

    info = {"tasks": [{"name": n, "family": f, "head_index": i} for i, (n, f) in enumerate(
        [("rte", "classification"), ("arc_easy", "multiple_choice"), ("cola", "classification"),
         ("swag", "multiple_choice"), ("xquad_en", "span")])]}

    def source(recipe_file, *extra):
        return embedding_source(info, load_recipe(f"recipes/finetune/{recipe_file}.yaml", list(extra)))

    assert source("rte") == [0]
    assert source("copa") == [1, 3]
    assert source("copa", "finetune.task_embedding_from=mean") == [0, 1, 2, 3, 4]
    assert source("copa", "finetune.head_from=swag") == [3]
    assert source("cb") == [0, 1, 2, 3, 4]
    assert source("cb", "finetune.task_embedding_from=cola") == [2]
    with pytest.raises(FinetuneError, match=r"finetune.head_from='nope': the export .* has no such task; it has "
                                            r"\['arc_easy', 'cola', 'rte', 'swag', 'xquad_en'\]"):
        source("cb", "finetune.reuse_head=false", "finetune.head_from=nope")
