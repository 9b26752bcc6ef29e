"""R3F: the symmetric KL against a direct computation, exactly 0 at sigma = 0 (dropout on), a gradient
check on a tiny model, and the noise distributions."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import TINY_BERT, family_splits, mixed_recipe  # noqa: E402

from prefinetune.families.family import get_family
from prefinetune.losses.r3f import embedding_noise, sym_kl
from prefinetune.model.multitask import build_model
from prefinetune.recipe.config import RecipeError, recipe_from_dict
from prefinetune.run.step import TrainData, _clean_and_perturbed, slot_loss
from prefinetune.sampling.schedule import Slot

FAMILIES = ["classification", "regression", "multiple_choice", "span"]


def _model(dropout: float, families=FAMILIES, dtype=torch.float32, **r3f):
    from transformers import AutoModel, BertConfig

    torch.manual_seed(0)
    cfg = {**TINY_BERT, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    data = mixed_recipe(families, r3f={"enabled": True, **r3f})
    data["model"]["head_dropout"] = dropout
    recipe = recipe_from_dict(data)
    model = build_model(recipe, backbone=AutoModel.from_config(BertConfig(**cfg))).to(dtype)
    return recipe, model, TrainData(family_splits(recipe), recipe.tasks, pad_id=0)


def test_sym_kl_equals_kl_both_ways_by_hand():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    expected = np.mean((p * np.log(p / q)).sum(1) + (q * np.log(q / p)).sum(1))
    assert float(sym_kl(torch.tensor(a), torch.tensor(b))) == pytest.approx(expected, rel=1e-6)
    mask = torch.tensor([True, False, True, False])
    masked = np.mean(((p * np.log(p / q)).sum(1) + (q * np.log(q / p)).sum(1))[[0, 2]])
    assert float(sym_kl(torch.tensor(a), torch.tensor(b), mask)) == pytest.approx(masked, rel=1e-6)
    assert float(sym_kl(torch.tensor(a), torch.tensor(a))) == 0.0


def test_family_penalties_span_sums_start_and_end_and_regression_is_squared_difference():
    s, e = torch.randn(3, 7), torch.randn(3, 7)
    s2, e2 = torch.randn(3, 7), torch.randn(3, 7)
    assert float(get_family("span").sym_kl((s, e), (s2, e2), {})) == pytest.approx(float(sym_kl(s, s2) + sym_kl(e, e2)))
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])
    assert float(get_family("regression").sym_kl(x, y, {})) == pytest.approx((0.25 + 1.0) / 2)


@pytest.mark.parametrize("task_index", range(5))
def test_sigma_zero_gives_exactly_zero_penalty_with_dropout_on(task_index):
    recipe, model, data = _model(dropout=0.3, sigma=0.0)
    model.train()
    task = recipe.tasks[task_index]
    batch = data.batch(Slot(0, task.name, (0, 1, 2, 3)), torch.device("cpu"))
    clean, noisy = _clean_and_perturbed(model, task_index, batch, recipe.r3f)
    assert float(get_family(task.family).sym_kl(clean["outputs"], noisy["outputs"], batch)) == 0.0
    recipe.r3f.sigma = 1e-2            # and a real perturbation does move the outputs
    clean, noisy = _clean_and_perturbed(model, task_index, batch, recipe.r3f)
    assert float(get_family(task.family).sym_kl(clean["outputs"], noisy["outputs"], batch)) > 0.0


def test_r3f_loss_gradient_check_on_a_tiny_model():
    recipe, model, data = _model(dropout=0.0, families=["classification"], dtype=torch.float64, sigma=0.5)
    task = recipe.tasks[0]
    batch = data.batch(Slot(0, task.name, (0, 1, 2)), torch.device("cpu"))
    weight = model.classification.out_weight

    def loss_of(w):
        with torch.no_grad():
            weight.copy_(w)
        torch.manual_seed(1)                       # the same noise on every evaluation
        loss, _ = slot_loss(model, 0, task, batch, recipe.r3f)
        return loss

    w0 = weight.detach().clone()
    torch.manual_seed(1)
    model.zero_grad()
    slot_loss(model, 0, task, batch, recipe.r3f)[0].backward()
    analytic = weight.grad.clone()
    numeric = torch.zeros_like(w0)
    eps = 1e-3                                       # the family losses compute in fp32 by design
    for idx in [(0, 0, 0), (0, 1, 3), (1, 2, 5), (1, 0, 31)]:
        plus, minus = w0.clone(), w0.clone()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (loss_of(plus) - loss_of(minus)) / (2 * eps)
        # tolerance: fp32 loss rounding / (2 eps)
        assert float(analytic[idx]) == pytest.approx(float(numeric[idx]), rel=2e-3, abs=5e-5), idx
    assert analytic.abs().sum() > 0


def test_noise_distributions():
    g = torch.Generator().manual_seed(0)
    z = embedding_noise((200, 500), torch.float32, "cpu", 0.1, "normal", g)
    assert float(z.mean()) == pytest.approx(0.0, abs=2e-3) and float(z.std()) == pytest.approx(0.1, rel=0.01)
    u = embedding_noise((200, 500), torch.float32, "cpu", 0.1, "uniform", g)
    assert float(u.min()) >= -0.1 and float(u.max()) <= 0.1
    assert float(u.std()) == pytest.approx(0.1 / 3 ** 0.5, rel=0.01)
    with pytest.raises(ValueError, match="unknown R3F noise 'gumbel'"):
        embedding_noise((2,), torch.float32, "cpu", 0.1, "gumbel")


def test_r4f_needs_r3f():
    data = mixed_recipe(["classification"], r3f={"spectral_norm": True})
    with pytest.raises(RecipeError, match=r"key 'r3f': .*set enabled: true too"):
        recipe_from_dict(data)


def test_r4f_heads_are_spectrally_normalised_and_export_round_trips(tmp_path):
    from prefinetune.export import export_model, load_exported
    from prefinetune.model.source import load_tokenizer
    from prefinetune.model.tiny import save_tiny_bart

    recipe, model, data = _model(dropout=0.0, spectral_norm=True)
    for bank in (model.classification, model.regression, model.multiple_choice):
        for t in range(len(bank.num_labels)):
            for w in bank.weights(t):
                assert float(torch.linalg.svdvals(w.detach())[0]) == pytest.approx(1.0, rel=1e-5)
    # The span head's effective weight too, and the penalty still flows into the raw parameters.
    task = recipe.tasks[-1]
    batch = data.batch(Slot(0, task.name, (0, 1)), torch.device("cpu"))
    slot_loss(model, len(recipe.tasks) - 1, task, batch, recipe.r3f)[0].backward()
    assert model.span.weight.grad is not None and model.span.weight.grad.abs().sum() > 0
    # R4F changes the function: same weights without normalisation give other logits.
    plain_recipe = recipe_from_dict(mixed_recipe(FAMILIES, r3f={"enabled": True}))
    plain = build_model(plain_recipe, backbone=model.backbone)
    plain.load_state_dict(model.state_dict())
    b0 = data.batch(Slot(0, recipe.tasks[0].name, (0, 1)), torch.device("cpu"))
    model.eval(), plain.eval()
    assert not torch.allclose(model(0, b0)["outputs"], plain(0, b0)["outputs"])
    # Export keeps the flag: the reloaded model computes the same outputs.
    bart = save_tiny_bart(tmp_path / "bart")
    data_b = mixed_recipe(["classification", "span"], r3f={"enabled": True, "spectral_norm": True})
    data_b["model"]["name_or_path"] = str(bart)
    recipe_b = recipe_from_dict(data_b)
    model_b = build_model(recipe_b).eval()
    loaded, info = load_exported(export_model(model_b, load_tokenizer(str(bart)), tmp_path / "exp", recipe_b))
    assert info["model"]["spectral_norm"] is True
    splits = TrainData(family_splits(recipe_b), recipe_b.tasks, pad_id=0)
    for i, t in enumerate(recipe_b.tasks):
        b = splits.batch(Slot(0, t.name, (0, 1)), torch.device("cpu"))
        want, got = model_b(i, b)["outputs"], loaded(i, b)["outputs"]
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(g, w)


# ---------------------------------------------------------------- noise and low precision

def test_noise_survives_in_fp32_and_vanishes_below_the_rounding_step():
    from prefinetune.losses.r3f import noise_survival

    ones = torch.ones(100, 8)                  # bf16's step at 1.0 is 2**-7: noise of 1e-5 rounds away
    # fp32's step at 1.0 is 2**-23: only noise below half of it (P ~ 0.5% at sigma 1e-5) is lost.
    assert 0.98 < noise_survival(ones, 1e-5, "normal", torch.float32) < 1.0
    assert noise_survival(ones, 1e-5, "normal", torch.bfloat16) == 0.0
    assert noise_survival(ones, 1e-5, "uniform", torch.float16) == 0.0   # fp16's step at 1.0: 2**-10
    tiny = torch.full((100, 8), 1e-7)          # far below sigma: every value moves
    assert noise_survival(tiny, 1e-5, "normal", torch.bfloat16) == 1.0
    assert noise_survival(ones, 0.0, "normal", torch.float32) == 0.0


def test_low_precision_note_names_sigma_and_the_share_kept():
    from prefinetune.losses.r3f import low_precision_note
    from prefinetune.recipe.config import R3FSection

    embeddings = torch.randn(500, 16, generator=torch.Generator().manual_seed(0)) * 0.035
    on = R3FSection(enabled=True, sigma=1e-5)
    note = low_precision_note(embeddings, on, torch.bfloat16)
    assert note and "sigma=1e-05" in note and "bfloat16" in note and "deepspeed.precision: fp32" in note
    kept = int(note.split("changes only ")[1].split("%")[0])
    assert kept < 20, note
    assert low_precision_note(embeddings, on, torch.float32) is None
    assert low_precision_note(embeddings, R3FSection(enabled=True, sigma=1e-2), torch.bfloat16) is None
    assert low_precision_note(embeddings, R3FSection(enabled=False), torch.bfloat16) is None
