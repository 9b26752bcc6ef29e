"""`prefinetune report RUN_DIR` on a run folder of a tiny BERT export (recipe.json, export/, metrics.jsonl,
real rows from ../shared/data): the task similarity JSON is eq. 3.7 computed directly on the [CLS] states
that transformers' own AutoModel gives for the same rows, the heatmap and the curves are PNGs, and a folder
that is not a run is refused by name. (On the main job's run: tests/test_main_job.py.)

    python -m pytest tests/report/test_report.py -q
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from prefinetune.cli import main
from prefinetune.export import export_model
from prefinetune.model.multitask import build_model
from prefinetune.model.source import load_tokenizer
from prefinetune.model.tiny import save_tiny_bert
from prefinetune.recipe.config import load_recipe

PNG = b"\x89PNG\r\n\x1a\n"
ROWS = 40


def _direct(x: np.ndarray, y: np.ndarray, rank: int) -> float:
    def ud(m):
        values, vectors = np.linalg.eigh(m.T @ m)
        top = np.argsort(values)[::-1][:rank]
        return vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
    a, b = ud(x.astype(np.float64)), ud(y.astype(np.float64))
    return np.linalg.norm(a.T @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("report")
    bert = save_tiny_bert(root / "bert", seed=5)
    recipe = load_recipe("recipes/shared_data_cpu.yaml", [f"model.name_or_path={bert}", f"data.root={data_root}",
                                                          "data.synthetic=false"])
    data = recipe.model_dump(mode="json")
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("cola", "rte", "mrpc")]
    recipe = type(recipe).model_validate(data)
    run = root / "run"
    export_model(build_model(recipe).eval(), load_tokenizer(str(bert)), run / "export", recipe)
    (run / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json")))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"update": u, "loss/cola": 1.0 / u, "loss/rte": 0.7,
                                                           "mix/cola": 0.5, "mix/rte": 0.5}) + "\n"
                                               for u in (1, 2, 3)))
    return run


def _texts(data_root, task: str) -> tuple[list[str], list[str] | None]:
    if task == "cola":          # no header: source, label, mark, sentence
        with open(data_root / task / "dev.tsv", encoding="utf-8") as f:
            return [r[3] for r in list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:ROWS]], None
    with open(data_root / task / "dev.tsv", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:ROWS]
    if task == "rte":
        return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    return [r["#1 String"] for r in rows], [r["#2 String"] for r in rows]


def test_the_report_is_eq_3_7_on_the_models_own_states(run_dir, data_root):
    from transformers import AutoModel, AutoTokenizer

    assert main(["report", str(run_dir), "--max-rows", str(ROWS), "--rank", "4"]) == 0
    out = run_dir / "report"
    report = json.loads((out / "task_similarity.json").read_text())
    assert report["tasks"] == ["cola", "mrpc", "rte"] and report["split"] == "dev" and report["rank"] == 4
    assert report["sequences"] == {"cola": ROWS, "mrpc": ROWS, "rte": ROWS}
    encoder = AutoModel.from_pretrained(run_dir / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "export")
    states = {}
    for task in report["tasks"]:
        first, second = _texts(data_root, task)
        tokens = tokenizer(first, second, truncation=True, max_length=64, padding=True, return_tensors="pt")
        with torch.no_grad():
            states[task] = encoder(**tokens).last_hidden_state[:, 0].numpy()
    want = [[_direct(states[a], states[b], 4) for b in report["tasks"]] for a in report["tasks"]]
    np.testing.assert_allclose(report["covsim"], want, atol=2e-5)
    for name in ("task_similarity.png", "loss_curves.png", "task_mix.png"):
        assert (out / name).read_bytes()[:8] == PNG, name


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path.resolve()} is not a run folder: it has no recipe.json" in capsys.readouterr().err


def test_a_run_without_an_export_yet_gets_what_it_has_and_says_what_it_lacks(run_dir, tmp_path, capsys):
    early = tmp_path / "early"                          # moved, and not exported yet: its curves only
    early.mkdir()
    (early / "recipe.json").write_bytes((run_dir / "recipe.json").read_bytes())
    assert main(["report", str(early)]) == 2
    assert "nothing to report" in capsys.readouterr().err
    (early / "metrics.jsonl").write_bytes((run_dir / "metrics.jsonl").read_bytes())
    assert main(["report", str(early)]) == 0
    said = capsys.readouterr().out
    assert f"no task similarity: {early.resolve()} has no export yet" in said and "did not sample it" in said
    assert sorted(p.name for p in (early / "report").iterdir()) == ["loss_curves.png", "task_mix.png"]
