"""Export: DeepSpeed checkpoints (ZeRO 0/1/2, fp32 and bf16) of tiny random BERT/RoBERTa models become
Hugging Face folders that reproduce the trained model exactly.

    python -m pytest tests/test_export.py -q

DeepSpeed runs in this process on a 1-rank gloo group; each test gets a fresh port and destroys the
group afterwards.
"""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from conftest import free_port  # noqa: E402
from transformers import AutoModel, AutoModelForSequenceClassification

from prefinetune.export import (
    CheckpointError,
    add_task_folders,
    export_from_checkpoint,
    export_model,
    load_exported,
    push_to_hub,
    read_tasks_info,
    state_dict_from_checkpoint,
)
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.recipe.config import recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a cat dog sat ran far away good bad movie was not very is it and of to on in at by").split()
TASKS = {"sentiment": ["neg", "pos"], "nli": ["entail", "neutral", "contradict"],
         "topic": ["sport", "tech", "food", "art", "news"]}
TEXTS = ["the cat sat on the movie", "a dog ran far away and it was not very good", "bad"]
SIZES = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             max_position_embeddings=64, pad_token_id=0)
CONFIGS = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
           "xlm-roberta": transformers.XLMRobertaConfig, "camembert": transformers.CamembertConfig,
           "electra": transformers.ElectraConfig}


# ---------------------------------------------------------------- fixtures and helpers

def tiny_model_dir(root: Path, model_type: str) -> Path:
    """A local model folder (config, random weights, WordPiece tokenizer) that a recipe can name."""
    folder = root / f"tiny-{model_type}"
    if not folder.exists():
        torch.manual_seed(0)
        AutoModel.from_config(CONFIGS[model_type](**SIZES)).save_pretrained(folder)
        transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


def make_recipe(model_dir: Path, zero_stage: int = 0, precision: str = "fp32", head_dense: str = "per_task",
                **model):
    return recipe_from_dict({
        "run": {"name": "tiny-export"},
        "model": {"name_or_path": str(model_dir), "max_length": 32, "head_dropout": 0.1, "head_dense": head_dense,
                  **model},
        "tasks": [{"name": n, "label_names": labels, "splits": {"train": f"{n}.jsonl"},
                   "columns": {"text": "text", "label": "label"}} for n, labels in TASKS.items()],
        "train": {"updates": 2, "slots_per_update": 3, "batch_size": 3},
        "scaling": {"num_workers": 1, "use_gpu": False},
        "deepspeed": {"zero_stage": zero_stage, "precision": precision}})


def batch(model_dir: Path) -> dict[str, torch.Tensor]:
    enc = load_tokenizer(str(model_dir))(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.fixture
def dist_group(monkeypatch):
    """A 1-process gloo group on a free port (as the worker loop starts it), destroyed after the test."""
    import deepspeed

    from prefinetune.distributed.engine import init_distributed

    for key, value in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                           LOCAL_RANK="0", LOCAL_WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    init_distributed(on_gpu=False)
    yield
    deepspeed.comm.destroy_process_group()


def train_and_save(recipe, checkpoint_dir: Path, client_state: dict | None = None):
    """Two DeepSpeed updates (one micro-batch per task each), then save_checkpoint; returns the engine."""
    import deepspeed

    torch.manual_seed(1)
    model = build_model(recipe)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    config = {"train_micro_batch_size_per_gpu": recipe.train.batch_size, "gradient_accumulation_steps": len(TASKS),
              "zero_optimization": {"stage": recipe.deepspeed.zero_stage}, "zero_allow_untested_optimizer": True,
              "bf16": {"enabled": recipe.deepspeed.precision == "bf16"}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    inputs = batch(Path(recipe.model.name_or_path))
    for _update in range(2):
        for task_id, labels in enumerate(TASKS.values()):
            target = torch.arange(len(TEXTS)) % len(labels)
            loss = torch.nn.functional.cross_entropy(engine(task_id, inputs)["outputs"].float(), target)
            engine.backward(loss)
            engine.step()
    engine.save_checkpoint(str(checkpoint_dir), tag="update2", client_state=client_state or {})
    return engine


def task_logits(model, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {name: model(i, inputs)["outputs"].float() for i, name in enumerate(TASKS)}


# ---------------------------------------------------------------- checkpoint -> export, exactly

@pytest.mark.parametrize("model_type,zero_stage,head_dense", [
    ("bert", 0, "per_task"), ("bert", 1, "per_task"), ("bert", 2, "per_task"), ("roberta", 2, "per_task"),
    ("roberta", 2, "shared")])
def test_export_reproduces_trained_model(tmp_path, dist_group, model_type, zero_stage, head_dense):
    model_dir = tiny_model_dir(tmp_path, model_type)
    recipe = make_recipe(model_dir, zero_stage, head_dense=head_dense)
    start = {k: v.clone() for k, v in build_model(recipe).state_dict().items()}
    trained = train_and_save(recipe, tmp_path / "ckpt").module.eval()
    out = export_from_checkpoint(tmp_path / "ckpt", recipe, tmp_path / "export")
    inputs = batch(model_dir)

    state = state_dict_from_checkpoint(tmp_path / "ckpt")
    assert state.keys() == trained.state_dict().keys()
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    assert not torch.equal(state["classification.out_weight"], start["classification.out_weight"])

    backbone = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        got = backbone(**inputs).last_hidden_state
        want = trained.backbone(**inputs).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert not torch.allclose(got, AutoModel.from_pretrained(model_dir).eval()(**inputs).last_hidden_state)

    expected = task_logits(trained, inputs)
    for name, labels in TASKS.items():
        clf = AutoModelForSequenceClassification.from_pretrained(out / "tasks" / name).eval()
        assert clf.config.id2label == dict(enumerate(labels)) and clf.config.num_labels == len(labels)
        with torch.no_grad():
            torch.testing.assert_close(clf(**inputs).logits, expected[name], atol=1e-6, rtol=0)

    reloaded, info = load_exported(out)
    assert not reloaded.backbone.use_kernels          # no hub kernels (prefinetune/model/source.py)
    for name, logits in task_logits(reloaded, inputs).items():
        torch.testing.assert_close(logits, expected[name], atol=1e-6, rtol=0)
    assert [t["name"] for t in info["tasks"]] == list(TASKS)
    assert info["model"]["head_dense"] == head_dense and reloaded.shared_dense == (head_dense == "shared")


def test_export_of_attention_heads_reloads_to_the_trained_model(tmp_path, dist_group):
    """model.head: attention (two widths) under ZeRO-2: load_exported gives the trained model's outputs, tasks.json
    and the card name the design and each head's width, and no stock per-task folder pretends to hold them."""
    model_dir = tiny_model_dir(tmp_path, "bert")
    widths = {"sentiment": 16, "nli": 8, **{n: 16 for n in list(TASKS)[2:]}}
    recipe = make_recipe(model_dir, 2, head="attention", head_dim=widths, head_attention_heads=2)
    start = {k: v.clone() for k, v in build_model(recipe).state_dict().items()}
    trained = train_and_save(recipe, tmp_path / "ckpt", {"recipe": recipe.model_dump(mode="json")}).module.eval()
    # `prefinetune export --recipe` of a DyPa recipe: the widths the run resolved, read from its checkpoint (no
    # shards here to size them again)
    dypa = make_recipe(model_dir, 2, head="attention", head_dim="dypa", head_attention_heads=2)
    out = export_from_checkpoint(tmp_path / "ckpt", dypa, tmp_path / "export")
    inputs = batch(model_dir)
    assert not torch.equal(trained.state_dict()["classification.groups.d8.in_weight"],
                           start["classification.groups.d8.in_weight"])

    reloaded, info = load_exported(out)
    expected = task_logits(trained, inputs)
    for name, logits in task_logits(reloaded, inputs).items():
        torch.testing.assert_close(logits, expected[name], atol=1e-6, rtol=0)
    assert info["model"]["head"] == "attention" and info["model"]["head_attention_heads"] == 2
    assert {t["name"]: t["head_dim"] for t in info["tasks"]} == widths
    assert [(t["head_group"], t["head_row"]) for t in info["tasks"][:2]] == [("d16", 0), ("d8", 0)]
    assert all(t["folder"] is None and "attention head" in t["folder_skipped"] for t in info["tasks"])
    assert not (out / "tasks").exists()
    card = (out / "README.md").read_text()
    assert "low-dimensional attention heads" in card and "widths 8, 16" in card
    with pytest.raises(ValueError, match="attention head .*no stock transformers class"):
        add_task_folders(out, ["nli"])
    train_and_save(recipe, tmp_path / "unrecorded")
    with pytest.raises(ValueError, match=r"model.head_dim dypa: the checkpoint .*update2 does not record the widths"):
        export_from_checkpoint(tmp_path / "unrecorded", dypa, tmp_path / "export2")


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_frozen_pooler_survives_export(tmp_path, dist_group, zero_stage):
    """zero_to_fp32 returns no frozen parameters for ZeRO-1; the export still holds the pooler."""
    model_dir = tiny_model_dir(tmp_path, "bert")
    recipe = make_recipe(model_dir, zero_stage)
    trained = train_and_save(recipe, tmp_path / "ckpt").module
    out = export_from_checkpoint(tmp_path / "ckpt", recipe, tmp_path / "export")
    original = AutoModel.from_pretrained(model_dir).pooler.dense
    exported = AutoModel.from_pretrained(out).pooler.dense
    for name in ("weight", "bias"):
        assert not getattr(trained.backbone.pooler.dense, name).requires_grad
        assert torch.equal(getattr(exported, name), getattr(trained.backbone.pooler.dense, name))
        assert torch.equal(getattr(exported, name), getattr(original, name))


def test_bf16_zero2_recovers_fp32_master_weights(tmp_path, dist_group):
    from deepspeed.utils import safe_get_full_fp32_param

    model_dir = tiny_model_dir(tmp_path, "bert")
    recipe = make_recipe(model_dir, zero_stage=2, precision="bf16")
    engine = train_and_save(recipe, tmp_path / "ckpt")
    state = state_dict_from_checkpoint(tmp_path / "ckpt")
    assert all(t.dtype == torch.float32 for t in state.values() if t.is_floating_point())
    for name, param in engine.module.named_parameters():
        if param.requires_grad:
            assert param.dtype == torch.bfloat16
            assert torch.equal(state[name], safe_get_full_fp32_param(param)), name

    out = export_from_checkpoint(tmp_path / "ckpt", recipe, tmp_path / "export")
    exported = AutoModel.from_pretrained(out)
    assert exported.dtype == torch.float32
    # the frozen pooler is checkpointed only in bf16; the export keeps its exact fp32 starting value
    assert torch.equal(exported.pooler.dense.weight, AutoModel.from_pretrained(model_dir).pooler.dense.weight)
    assert torch.equal(exported.encoder.layer[0].attention.self.query.weight,
                       state["backbone.encoder.layer.0.attention.self.query.weight"])


def test_command_line_export(tmp_path, dist_group, capsys):
    model_dir = tiny_model_dir(tmp_path, "bert")
    recipe = make_recipe(model_dir, zero_stage=0)
    train_and_save(recipe, tmp_path / "ckpt")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe.model_dump(mode="json")))
    main = runpy.run_path(str(REPO / "launch" / "export.py"), run_name="export_cli")["main"]
    args = ["--recipe", str(recipe_file), "--checkpoint", str(tmp_path / "ckpt" / "update2"),
            "--out", str(tmp_path / "export"), "model.max_length=48"]
    assert main(args) == 0
    assert read_tasks_info(tmp_path / "export")["model"]["max_length"] == 48
    assert "export:" in capsys.readouterr().out


# ---------------------------------------------------------------- the folder itself

@pytest.fixture
def exported(tmp_path, monkeypatch):
    """An export of a tiny BERT with random heads (no DeepSpeed), written while HF_TOKEN is set."""
    monkeypatch.setenv("HF_TOKEN", "hf_NotARealTokenButSecret123")
    model_dir = tiny_model_dir(tmp_path, "bert")
    recipe = make_recipe(model_dir)
    model = _randomize_heads(build_model(recipe))
    return export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe), recipe, model


def _randomize_heads(model):
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.classification.parameters():
            p.normal_(std=0.3)
    return model.eval()


def test_folder_layout_and_tasks_json(exported):
    out, recipe, _ = exported
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "heads.safetensors", "tasks.json", "README.md",
            "tokenizer.json", "tokenizer_config.json"} <= names
    for task in TASKS:
        assert {f"tasks/{task}/config.json", f"tasks/{task}/model.safetensors.index.json",
                f"tasks/{task}/backbone.safetensors", f"tasks/{task}/head.safetensors",
                f"tasks/{task}/tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert not any(p.name.endswith(".partial") for p in out.parent.iterdir())

    info = json.loads((out / "tasks.json").read_text())
    assert info["model"] == {"name_or_path": "local:tiny-bert", "revision": None, "model_type": "bert",
                             "hidden_size": 32, "max_length": 32, "head_dropout": 0.1, "spectral_norm": False,
                             "head_dense": "per_task", "head": "fc", "alignment": "none", "alignment_at": None,
                             "conditioning": "none"}
    assert [(t["name"], t["label_names"], t["num_labels"], t["head_index"], t["folder"], t["folder_skipped"])
            for t in info["tasks"]] == [(n, labels, len(labels), i, f"tasks/{n}", None)
                                        for i, (n, labels) in enumerate(TASKS.items())]
    card = (out / "README.md").read_text()
    assert all(name in card for name in TASKS) and "load_exported" in card


def test_task_folders_share_one_backbone_file_and_each_loads_alone(exported, tmp_path):
    """The backbone's weights are one file on disk (hard links), the heads apart; a task folder copied on
    its own still loads and gives the model's logits; every file is readable as the umask allows."""
    import os
    import shutil

    from safetensors import safe_open

    out, recipe, model = exported
    backbones = [out / "tasks" / task / "backbone.safetensors" for task in TASKS]
    assert len({p.stat().st_ino for p in backbones}) == 1 and backbones[0].stat().st_nlink == len(TASKS)
    with safe_open(str(backbones[0]), "pt") as f:
        keys = set(f.keys())
    assert keys and all(k.startswith("bert.") and not k.startswith("bert.pooler.") for k in keys)
    for task in TASKS:          # the pooler holds the task's head (BERT's exact home for it): the task's own
        with safe_open(str(out / "tasks" / task / "head.safetensors"), "pt") as f:
            assert set(f.keys()) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                     "classifier.bias"}
    alone = tmp_path / "alone"
    shutil.copytree(out / "tasks" / "nli", alone)
    expected = task_logits(model, batch(Path(recipe.model.name_or_path)))["nli"]
    with torch.no_grad():
        got = AutoModelForSequenceClassification.from_pretrained(alone).eval()(**batch(Path(recipe.model.name_or_path)))
    torch.testing.assert_close(got.logits, expected, atol=1e-6, rtol=0)
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_task_folders_asked_for_and_added_later(tmp_path, capsys):
    """export.task_folders: [topic] writes that folder alone; `prefinetune task-folders` adds another
    later, sharing the backbone file already there; an unknown name is refused by the recipe and the
    command."""
    from prefinetune.cli import main
    from prefinetune.recipe.config import RecipeError

    model_dir = tiny_model_dir(tmp_path, "bert")
    data = make_recipe(model_dir).model_dump(mode="json")
    data["export"] = {"task_folders": ["topic"]}
    recipe = recipe_from_dict(data)
    model = _randomize_heads(build_model(recipe))
    out = export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe)
    info = {t["name"]: t for t in read_tasks_info(out)["tasks"]}
    assert sorted(p.name for p in (out / "tasks").iterdir()) == ["topic"]
    assert info["nli"]["folder"] is None and info["nli"]["folder_skipped"] == (
        "not asked for (export.task_folders=['topic']); prefinetune task-folders EXPORT TASK writes it")
    card = (out / "README.md").read_text()
    assert "| nli | classification | entail, neutral, contradict | 1 | none |" in card
    assert main(["task-folders", str(out), "nli"]) == 0
    assert f"wrote {out / 'tasks' / 'nli'}" in capsys.readouterr().out
    new_card = (out / "README.md").read_text()       # the task table says so; the rest is as it was
    assert "| nli | classification | entail, neutral, contradict | 1 | `tasks/nli` |" in new_card
    assert new_card.split("## Tasks")[0] == card.split("## Tasks")[0]
    assert new_card.split("## Final metrics")[1].split("## How to load")[0] == \
        card.split("## Final metrics")[1].split("## How to load")[0]
    info = {t["name"]: t for t in read_tasks_info(out)["tasks"]}
    assert (info["nli"]["folder"], info["nli"]["folder_skipped"]) == ("tasks/nli", None)
    assert (out / "tasks" / "nli" / "backbone.safetensors").stat().st_ino == \
        (out / "tasks" / "topic" / "backbone.safetensors").stat().st_ino
    expected = task_logits(model, batch(model_dir))["nli"]
    with torch.no_grad():
        got = AutoModelForSequenceClassification.from_pretrained(out / "tasks" / "nli").eval()(**batch(model_dir))
    torch.testing.assert_close(got.logits, expected, atol=1e-6, rtol=0)
    topic = (out / "tasks" / "topic" / "head.safetensors").read_bytes()
    assert main(["task-folders", str(out), "topic"]) == 0      # again: its backbone file was the one shared
    assert (out / "tasks" / "topic" / "head.safetensors").read_bytes() == topic
    assert (out / "tasks" / "topic" / "backbone.safetensors").stat().st_ino == \
        (out / "tasks" / "nli" / "backbone.safetensors").stat().st_ino
    assert main(["task-folders", str(out), "nope"]) == 2
    assert "has no tasks ['nope']" in capsys.readouterr().err
    data["export"] = {"task_folders": ["nope"]}
    with pytest.raises(RecipeError, match=r"export.task_folders names tasks the recipe does not have: \['nope'\]"):
        recipe_from_dict(data)


def test_export_holds_no_token(exported):
    out, _, _ = exported
    for path in out.rglob("*"):
        if path.is_file():
            assert b"hf_NotARealTokenButSecret123" not in path.read_bytes(), path


def test_heads_file_holds_the_head_bank(exported):
    from safetensors.torch import load_file

    out, _, model = exported
    heads = load_file(str(out / "heads.safetensors"))
    assert heads.keys() == {f"classification.{k}" for k in ("dense_weight", "dense_bias", "out_weight", "out_bias")}
    for key, tensor in heads.items():
        assert torch.equal(tensor, getattr(model.classification, key.split(".", 1)[1]))


def test_reexport_replaces_an_export_but_not_other_folders(exported, tmp_path):
    out, recipe, model = exported
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    (out / "stale.txt").write_text("from an earlier export")
    assert export_model(model, tokenizer, out, recipe) == out and not (out / "stale.txt").exists()
    other = tmp_path / "not-an-export"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not-an-export"):
        export_model(model, tokenizer, other, recipe)
    assert (other / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("model_type", ["xlm-roberta", "camembert", "electra"])
def test_per_task_folders_only_where_exact(tmp_path, model_type):
    model_dir = tiny_model_dir(tmp_path, model_type)
    recipe = make_recipe(model_dir)
    model = _randomize_heads(build_model(recipe))
    out = export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe)
    inputs = batch(model_dir)
    expected = task_logits(model, inputs)
    info = read_tasks_info(out)
    if model_type == "electra":  # its head uses GELU: same shapes, different function
        assert not (out / "tasks").exists()
        assert all(t["folder"] is None and "electra" in t["folder_skipped"] for t in info["tasks"])
    for name in TASKS if model_type != "electra" else []:
        clf = AutoModelForSequenceClassification.from_pretrained(out / "tasks" / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(clf(**inputs).logits, expected[name], atol=1e-6, rtol=0)
    reloaded, _ = load_exported(out)
    for name, logits in task_logits(reloaded, inputs).items():
        torch.testing.assert_close(logits, expected[name], atol=1e-6, rtol=0)


# ---------------------------------------------------------------- errors

def test_not_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="empty-folder.*latest"):
        state_dict_from_checkpoint(tmp_path / "empty-folder")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "latest").write_text("update9")
    with pytest.raises(CheckpointError, match="ckpt.*update9"):
        state_dict_from_checkpoint(tmp_path / "ckpt")


def test_push_to_hub_refuses_folders_that_are_not_exports(tmp_path, exported):
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="loose.*tasks.json"):
        push_to_hub(tmp_path / "loose", "someone/model", token="hf_unused")
    out, _, _ = exported
    (out / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        push_to_hub(out, "someone/model", token="hf_unused")


def test_export_round_trips_every_family_on_bart(tmp_path):
    from tiny import family_splits, mixed_recipe

    from prefinetune.export import export_model, load_exported
    from prefinetune.model.tiny import save_tiny_bart
    from prefinetune.run.step import TrainData
    from prefinetune.sampling.schedule import Slot

    folder = save_tiny_bart(tmp_path / "tiny_bart", seed=0)
    data = mixed_recipe(["classification", "regression", "multiple_choice", "span", "summarization", "tagging"])
    data["model"]["name_or_path"] = str(folder)
    recipe = recipe_from_dict(data)
    model = build_model(recipe)
    for p in (p for n, p in model.named_parameters() if not n.startswith("backbone.")):
        torch.nn.init.normal_(p, std=0.5)            # heads far from their init, so a lost head shows
    metrics = {f"dev/{t.name}/{m}": 0.125 * (i + 1) + j for i, t in enumerate(recipe.tasks)
               for j, m in enumerate(["accuracy", "rows"])}
    out = export_model(model, load_tokenizer(str(folder)), tmp_path / "export", recipe, metrics)
    loaded, info = load_exported(out)
    assert [t["family"] for t in info["tasks"]] == [t.family for t in recipe.tasks]
    _card_matches_tasks_json(out, metrics)
    # No exact AutoModelFor* mapping is written for BART heads yet: no folder, and tasks.json says why.
    assert all(t["folder"] is None and t["folder_skipped"] for t in info["tasks"])

    model.eval()
    splits = TrainData(family_splits(recipe), recipe.tasks, pad_id=0)
    for i, task in enumerate(recipe.tasks):
        batch = splits.batch(Slot(0, task.name, (0, 1, 2)), torch.device("cpu"))
        want, got = model(i, batch)["outputs"], loaded(i, batch)["outputs"]
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6, msg=lambda m: f"{task.name}: {m}")


def _card_matches_tasks_json(out: Path, metrics: dict) -> None:
    """The card states each task's family and head as tasks.json has them, and the run's metrics."""
    from prefinetune.families.family import get_family

    card, info = (out / "README.md").read_text(), read_tasks_info(out)
    tasks_section = card.split("## Tasks")[1].split("##")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in tasks_section.splitlines() if line.startswith("| ")}
    for task in info["tasks"]:
        assert rows[task["name"]][1] == task["family"] and rows[task["name"]][3] == str(task["head_index"])
        head, loss = get_family(task["family"]).head_summary, get_family(task["family"]).loss_summary
        assert f"| {task['family']} | {head} | {loss} |" in card
    families = {t["family"] for t in info["tasks"]}
    assert "shared by every multiple-choice task" in card and "not scaled" in card and "tied LM head" in card
    assert len(families) == 6 and "Every task has its own classification head" not in card
    metric_rows = card.split("## Final metrics (dev split)")[1].split("##")[0]
    for name in (t["name"] for t in info["tasks"]):
        accuracy, rows = metrics[f"dev/{name}/accuracy"], int(metrics[f"dev/{name}/rows"])
        assert f"| {name} | {accuracy:.4f} | {rows} |" in metric_rows


def test_a_failing_per_task_folder_leaves_the_export_whole(tmp_path, monkeypatch, capsys):
    """One per-task AutoModelFor* folder that cannot be written costs that folder, not the export."""
    import prefinetune.export.task_models as task_models

    model_dir = tiny_model_dir(tmp_path, "bert")
    recipe = make_recipe(model_dir)
    model = _randomize_heads(build_model(recipe))
    real = task_models.task_model

    def fails_for_nli(backbone, head, label_names, dropout):
        if label_names == TASKS["nli"]:
            raise OSError("disk full (on purpose)")
        return real(backbone, head, label_names, dropout)

    monkeypatch.setattr(task_models, "task_model", fails_for_nli)
    out = export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe)
    info = {t["name"]: t for t in read_tasks_info(out)["tasks"]}
    assert info["nli"]["folder"] is None and not (out / "tasks" / "nli").exists()
    assert info["nli"]["folder_skipped"] == "writing it failed (OSError: disk full (on purpose))"
    assert info["topic"]["folder"] == "tasks/topic" and (out / "tasks" / "topic" / "head.safetensors").is_file()
    warning = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "'nli'" in warning[0] and "disk full" in warning[0]
    reloaded, _ = load_exported(out)                  # backbone and every head are there
    expected, got = task_logits(model, batch(model_dir)), task_logits(reloaded, batch(model_dir))
    for name in TASKS:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_tagging_tasks_export_as_token_classifiers(tmp_path, model_type):
    """A tagging task's folder is a stock AutoModelForTokenClassification giving the model's tag logits."""
    from transformers import AutoModelForTokenClassification

    model_dir = tiny_model_dir(tmp_path, model_type)
    data = make_recipe(model_dir).model_dump(mode="json")
    data["tasks"].append({"name": "pos", "family": "tagging", "label_names": ["N", "V", "X", "P"],
                          "splits": {"train": "pos.jsonl"}, "columns": {"tokens": "w", "tags": "t"}})
    recipe = recipe_from_dict(data)
    model = _randomize_heads(build_model(recipe))
    with torch.no_grad():
        for p in model.tagging.parameters():
            p.normal_(std=0.3)
    out = export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe)
    assert {t["name"]: t["folder"] for t in read_tasks_info(out)["tasks"]}["pos"] == "tasks/pos"
    inputs = batch(model_dir)
    with torch.no_grad():
        expected = model(model.task_id("pos"), inputs)["outputs"]
        tagger = AutoModelForTokenClassification.from_pretrained(out / "tasks" / "pos").eval()
        torch.testing.assert_close(tagger(**inputs).logits, expected, atol=1e-6, rtol=0)
    assert tagger.config.id2label == {0: "N", 1: "V", 2: "X", 3: "P"}


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_regression_choice_and_span_tasks_export_as_stock_models(tmp_path, model_type):
    """Regression -> AutoModelForSequenceClassification (1 output, problem_type regression), the shared
    multiple-choice head -> AutoModelForMultipleChoice, the shared span head -> AutoModelForQuestionAnswering;
    each gives the model's own outputs."""
    from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering

    model_dir = tiny_model_dir(tmp_path, model_type)
    data = make_recipe(model_dir).model_dump(mode="json")
    data["tasks"] += [
        {"name": "sim", "family": "regression", "splits": {"train": "s.jsonl"}, "columns": {"text": "a", "label": "y"}},
        {"name": "mc", "family": "multiple_choice", "splits": {"train": "m.jsonl"},
         "columns": {"text": "q", "choices": "c", "label": "y"}},
        {"name": "qa", "family": "span", "splits": {"train": "q.json"}, "format": "squad",
         "columns": {"context": "context", "question": "question", "answers": "answers"}}]
    recipe = recipe_from_dict(data)
    model = _randomize_heads(build_model(recipe))
    with torch.no_grad():
        for p in list(model.regression.parameters()) + list(model.multiple_choice.parameters()) + \
                list(model.span.parameters()):
            p.normal_(std=0.3)
    out = export_model(model, load_tokenizer(str(model_dir)), tmp_path / "export", recipe)
    folders = {t["name"]: (t["folder"], t["auto_class"]) for t in read_tasks_info(out)["tasks"]}
    assert [folders[n] for n in ("sim", "mc", "qa")] == [
        ("tasks/sim", "AutoModelForSequenceClassification"), ("tasks/mc", "AutoModelForMultipleChoice"),
        ("tasks/qa", "AutoModelForQuestionAnswering")]
    inputs = batch(model_dir)                                   # 3 sequences
    ids, mask = (inputs[k].repeat(2, 1) for k in ("input_ids", "attention_mask"))   # 3 questions x 2 choices
    choices = {"input_ids": ids, "attention_mask": mask, "num_choices": 2,
               "choice_mask": torch.ones(3, 2, dtype=torch.bool)}
    full = {k: torch.ones_like(v) if k == "attention_mask" else v for k, v in inputs.items()}  # no padding
    with torch.no_grad():
        sim = AutoModelForSequenceClassification.from_pretrained(out / "tasks" / "sim").eval()
        assert sim.config.problem_type == "regression" and sim.config.num_labels == 1
        torch.testing.assert_close(sim(**inputs).logits.squeeze(-1), model(model.task_id("sim"), inputs)["outputs"],
                                   atol=1e-6, rtol=0)
        mc = AutoModelForMultipleChoice.from_pretrained(out / "tasks" / "mc").eval()
        got = mc(input_ids=ids.view(3, 2, -1), attention_mask=mask.view(3, 2, -1)).logits
        torch.testing.assert_close(got, model(model.task_id("mc"), choices)["outputs"], atol=1e-6, rtol=0)
        qa = AutoModelForQuestionAnswering.from_pretrained(out / "tasks" / "qa").eval()
        start, end = model(model.task_id("qa"), full)["outputs"]
        answer = qa(**full)
        torch.testing.assert_close(answer.start_logits, start, atol=1e-5, rtol=0)
        torch.testing.assert_close(answer.end_logits, end, atol=1e-5, rtol=0)


def test_a_card_edited_without_its_sections_is_left_as_it_is(exported):
    from prefinetune.export.card import refresh_card

    out, _, _ = exported
    info, card = read_tasks_info(out), (out / "README.md").read_text()
    assert refresh_card(card, info) == card                 # rendered again from the same tasks.json: the same
    assert refresh_card("# my own card\n\n## Tasks\n\nnone\n", info) is None
