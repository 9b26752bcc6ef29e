"""The one-command device check: the GPU path of a run, end to end, on one CUDA device.

    python benchmarks/gpu_check.py --data-dir ../shared/data      # writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --model DIR --random-weights   # DIR's config and tokenizer, random weights

What it runs, each step a check that passes or fails with its reason (the JSON keeps every one):
1. train: a short pre-finetuning run through Ray Train on 1 GPU worker (the process group NCCL with gloo
   beside it, `cpu:gloo,cuda:nccl`), MiniLM, bf16, DeepSpeed ZeRO-2, R3F on, four real tasks of three
   families, a checkpoint halfway and at the end, the final metrics and the export (`launcher.run`).
2. restart: the same run extended by a few updates, resumed from its last checkpoint through Ray Train,
   exported again; the resumed updates are in metrics.jsonl.
3. nonfinite: in this process on the GPU, the checkpoint loaded into a fresh bf16 ZeRO-2 engine (the fused
   AdamW step moved to CUDA after a reload), one clean update, then one whose embeddings turn NaN: it
   is skipped (`train.nonfinite_skips`), every weight bit-identical, and the next update applies. The
   project's collectives run at world size 1 on this group (a CPU and a CUDA tensor both go through).
4. mfu: model FLOPs utilisation of the training step (benchmarks/gpu_mfu.py).

Exits 2 with the reason on a machine without CUDA (or without Ray / DeepSpeed), 1 if a check failed, else 0.
Measured on one H200: 3 minutes in all (train 97 s, restart 46 s, nonfinite 14 s, mfu 17 s), most of it Ray's
start and the data preparation. On a machine without a package index: benchmarks/device_bundle.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, write_result  # noqa: E402

TASKS = ["rte", "sst2", "stsb", "copa"]
UPDATES, MORE = 40, 10


def recipe_dict(data_dir: str, work: Path, updates: int, model: str) -> dict:
    from prefinetune.catalog.shared_data import catalog_task

    return {"run": {"output_dir": str(work), "name": "gpu_check", "seed": 0},
            "model": {"name_or_path": model, "max_length": 128},
            "data": {"root": data_dir, "shards_dir": str(work / "shards")},
            "tasks": [catalog_task(t) for t in TASKS],
            "train": {"updates": updates, "slots_per_update": 8, "batch_size": 16, "log_every": 10,
                      "nonfinite_skips": 2},
            "optim": {"lr": 5e-5, "warmup_updates": 5},
            "r3f": {"enabled": True, "sigma": 1e-3},       # sigma 1e-5 is rounded away in bf16 (README)
            "deepspeed": {"zero_stage": 2, "precision": "bf16"},
            "eval": {"every_updates": updates, "max_rows": 200},
            "checkpoint": {"every_updates": UPDATES // 2, "keep": 2},
            "scaling": {"num_workers": 1, "use_gpu": True, "cpus_per_worker": 2}}


def random_weights_copy(source: str, folder: Path, seed: int = 0) -> str:
    """A copy of `source`'s config and tokenizer with weights initialised at random (safetensors).

    For a device machine that the pretrained weights cannot reach (the device tool carries 64 MiB a call:
    MiniLM's 90 MB of weights do not fit beside Ray): every check here tests the mechanics of the GPU
    path, and the MFU depends on the shapes alone, so none of them needs the pretrained values."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from prefinetune.model.source import resolve_model_source

    source = resolve_model_source(source)
    torch.manual_seed(seed)
    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return str(folder)


def check_train(data_dir: str, work: Path, model: str) -> dict:
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.driver import run

    out = run(recipe_from_dict(recipe_dict(data_dir, work, UPDATES, model)))
    assert out["metrics"]["update"] == UPDATES, out["metrics"]
    assert Path(out["export"], "model.safetensors").is_file()
    return {"checkpoint": out["checkpoint"], "final_metrics": out["metrics"]}


def check_restart(data_dir: str, work: Path, checkpoint: str, model: str) -> dict:
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.driver import run

    out = run(recipe_from_dict(recipe_dict(data_dir, work, UPDATES + MORE, model)), resume_from=checkpoint)
    logged = [json.loads(line)["update"] for line in Path(out["run_dir"], "metrics.jsonl").read_text().splitlines()]
    assert out["metrics"]["update"] == UPDATES + MORE and max(logged) == UPDATES + MORE, logged
    return {"checkpoint": out["checkpoint"], "final_metrics": out["metrics"]}


def _state(engine) -> dict:
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


def check_nonfinite(data_dir: str, work: Path, checkpoint: str, model: str) -> dict:
    import torch

    from prefinetune.data.shards import open_split
    from prefinetune.distributed import collectives
    from prefinetune.distributed.engine import build_engine
    from prefinetune.distributed.reshard import load_checkpoint
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.multitask import build_model
    from prefinetune.model.source import load_tokenizer
    from prefinetune.recipe.config import recipe_from_dict
    from prefinetune.run.step import TrainData, run_update
    from prefinetune.sampling.schedule import plan_update, worker_slots

    recipe = recipe_from_dict(recipe_dict(data_dir, work, UPDATES + MORE + 2, model))
    tokenizer = load_tokenizer(model)
    splits = {t.name: open_split(recipe.shards_path, t.name, "train") for t in recipe.tasks}
    data = TrainData(splits, recipe.tasks, tokenizer.pad_token_id, "auto", None, 16, 128)
    one_process_group()
    device = torch.device("cuda")
    engine = build_engine(build_model(recipe).to(device), recipe, 1, on_gpu=True)
    backend = torch.distributed.get_backend()
    state = load_checkpoint(engine, Path(checkpoint), work / "nonfinite", 0, 1)
    ids = {t.name: i for i, t in enumerate(recipe.tasks)}

    def update(index: int):
        plan = plan_update(recipe.sampling, 0, index, recipe.train.updates, 8, data.sizes, 16, data.row_drawer)
        return run_update(engine, ids, worker_slots(plan, 0, 1), data, device, 0, index, recipe.r3f,
                          skip_nonfinite=True)

    first = update(int(state["update"]))
    before = _state(engine)
    hook = engine.module.backbone.get_input_embeddings().register_forward_hook(lambda m, i, o: o * float("nan"))
    try:
        skipped = update(int(state["update"]) + 1)
    finally:
        hook.remove()
    unchanged = all(torch.equal(before[k], v) for k, v in _state(engine).items())
    after = update(int(state["update"]) + 2)
    moved = any(not torch.equal(before[k], v) for k, v in _state(engine).items())
    sums = [collectives.all_reduce(torch.ones(2, device=d)).tolist() for d in ("cpu", "cuda")]
    assert first.skipped is None and skipped.skipped and unchanged and after.skipped is None and moved, \
        (first.skipped, skipped.skipped, unchanged, after.skipped, moved)
    assert sums == [[1.0, 1.0], [1.0, 1.0]], sums
    return {"backend": backend, "resumed_after_update": int(state["update"]), "skipped": skipped.skipped}


def check_mfu(data_dir: str, work: Path, peak_tflops: float, model: str, profile: Path) -> dict:
    import gpu_mfu

    out = work / "gpu_mfu.json"
    code = gpu_mfu.main(["--data-dir", data_dir, "--work", str(work / "mfu"), "--peak-tflops", str(peak_tflops),
                         "--updates", "30", "--out", str(out), "--model", model,
                         "--profile", str(profile)])
    assert code == 0, f"gpu_mfu.py exited {code}"
    return json.loads(out.read_text())


def missing_requirement() -> str | None:
    """Why this machine cannot run the check, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device is visible here (torch.cuda.is_available() is False)"
    for module in ("ray", "deepspeed", "transformers"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e . installs it)"
    return None


def versions() -> dict:
    """The versions the check ran with (a device image has its own)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "deepspeed", "ray", "transformers", "datasets", "pyarrow", "numpy", "pydantic"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--work", default="/tmp/prefinetune_gpu_check")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    p.add_argument("--model", default=MODEL, help="the backbone: a folder, hub id or pkg: source (default MiniLM)")
    p.add_argument("--random-weights", action="store_true",
                   help="use --model's config and tokenizer with random weights (a machine its weights cannot reach)")
    args = p.parse_args(argv)
    why = missing_requirement()
    if why:
        print(f"gpu_check.py: cannot run here: {why}", file=sys.stderr)
        return 2
    import torch

    work = Path(args.work)
    import shutil

    shutil.rmtree(work / "gpu_check", ignore_errors=True)    # a run folder holds one run: each check starts anew
    model = random_weights_copy(args.model, work / "random_model") if args.random_weights else args.model
    result: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "model": args.model,
                    "random_weights": args.random_weights, "versions": versions(), "checks": {}}
    checkpoint = None
    steps = [("train", lambda: check_train(args.data_dir, work, model)),
             ("restart", lambda: check_restart(args.data_dir, work, checkpoint, model)),
             ("nonfinite", lambda: check_nonfinite(args.data_dir, work, checkpoint, model)),
             ("mfu", lambda: check_mfu(args.data_dir, work, args.peak_tflops, model,
                                     Path(args.out).with_suffix(".profile.txt")))]
    for name, step in steps:
        start = time.perf_counter()
        try:
            detail = step()
            if name == "train":
                checkpoint = detail["checkpoint"]
            result["checks"][name] = {"ok": True, "seconds": time.perf_counter() - start, **detail}
        except Exception as err:        # noqa: BLE001 - every check is reported, the next still runs
            result["checks"][name] = {"ok": False, "seconds": time.perf_counter() - start,
                                      "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(f"[gpu_check] {name}: {'ok' if result['checks'][name]['ok'] else 'FAILED'} "
              f"({result['checks'][name]['seconds']:.0f} s)", flush=True)
    write_result(args.out, result)
    return 0 if all(c["ok"] for c in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
