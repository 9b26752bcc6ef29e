"""Model FLOPs utilisation of prefinetune's training step on one GPU in bf16: system (c) of
benchmarks/throughput.py (MiniLM, SST-2, 32 examples an update in 2 slots, the default token budget,
one DeepSpeed ZeRO-2 worker), run in one process without Ray, timed over steady updates.

MFU = achieved model FLOPs/s / the GPU's peak dense bf16 FLOPs/s. Model FLOPs per update are counted
the usual way for a transformer encoder (Kaplan et al. 2020; Chinchilla's appendix): 6 x parameters
x real tokens for the matrix multiplies (forward 2, backward 4; the parameters less the embedding tables,
which are looked up, not multiplied: 10.9M of MiniLM's 22.9M) plus attention's 12 x layers x hidden
x tokens x sequence length; padding tokens are not counted, so padding lowers MFU as it should.
(The H200 figures of 2026-12-04, benchmarks/results/gpu_mfu_h200.json, counted all 22.9M: about 2x.)

    python benchmarks/gpu_mfu.py --data-dir ../shared/data --peak-tflops 989 --out benchmarks/results/gpu_mfu.json

--peak-tflops: the GPU's dense bf16 peak (H100/H200 SXM: 989; A100: 312). Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_tasks import MODEL, REPO, prepared_tasks, write_result  # noqa: E402

SLOTS, ROWS, LENGTH = 2, 16, 128             # the defaults: system (c) of benchmarks/throughput.py
PROFILED = 5                  # updates profiled after the timed ones (--profile): within the LR schedule


def update_flops(params: int, layers: int, hidden: int, batches: list) -> float:
    """Training FLOPs of one update: 6 N per real token, and attention over each batch's padded length."""
    flops = 0.0
    for mask in batches:
        real = int(mask.sum())
        flops += 6 * params * real + 12 * layers * hidden * real * mask.shape[1]
    return flops


def profile_updates(path: str, update, indices) -> None:
    """torch.profiler over `update(i)` for each index: where an update's time goes, by operator, sorted by
    the time the CPU spends in it and by the time the GPU does (a launch-bound step shows the first)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in indices:
            update(i)
        torch.cuda.synchronize()
    table = prof.key_averages()
    Path(path).write_text("\n\n".join(table.table(sort_by=key, row_limit=40)
                                      for key in ("self_cpu_time_total", "self_cuda_time_total", "cpu_time_total")))
    print(f"wrote {path}")


def matmul_parameters(model) -> int:
    """The parameters that take part in matrix multiplies: all but the embedding tables (a lookup does
    none), as Kaplan et al.'s N counts them."""
    from torch import nn

    embedded = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return sum(p.numel() for p in model.parameters()) - embedded


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_mfu.json"))
    p.add_argument("--work", default="/tmp/prefinetune_gpu_mfu")
    p.add_argument("--peak-tflops", type=float, required=True, help="the GPU's dense bf16 peak, TFLOP/s")
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--model", default=MODEL, help="the backbone (default: MiniLM from its PyPI package)")
    p.add_argument("--profile", help="profile 5 more updates (torch.profiler), tables here")
    p.add_argument("--slots", type=int, default=SLOTS, help="slots (micro-batches) per update")
    p.add_argument("--rows", type=int, default=ROWS, help="rows per slot")
    p.add_argument("--zero-stage", type=int, default=2, choices=(0, 1, 2))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_mfu.py needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    from prefinetune.distributed.engine import build_engine
    from prefinetune.finetune.local import one_process_group
    from prefinetune.model.multitask import build_model
    from prefinetune.run.step import TrainData, run_update
    from prefinetune.sampling.schedule import plan_update, worker_slots

    total = args.updates + PROFILED
    recipe, tokenizer, data = prepared_tasks(args.data_dir, Path(args.work), ["sst2"], "gpu_mfu", args.model,
                                             train={"slots_per_update": args.slots, "batch_size": args.rows,
                                                    "updates": total},
                                             deepspeed={"zero_stage": args.zero_stage, "precision": "bf16"},
                                             scaling={"num_workers": 1, "use_gpu": True})
    data = TrainData(data.splits, recipe.tasks, tokenizer.pad_token_id, "auto", None, args.rows, LENGTH)   # the default
    one_process_group()
    device = torch.device("cuda")
    model = build_model(recipe).to(device)
    cfg, params = model.backbone.config, matmul_parameters(model)
    engine = build_engine(model, recipe, 1, on_gpu=True)

    def slots_of(u: int):
        return worker_slots(plan_update(recipe.sampling, 0, u, total, args.slots, data.sizes, args.rows,
                                        data.row_drawer), 0, 1)

    times, flops = [], []
    for u in range(args.updates):
        slots = slots_of(u)
        torch.cuda.synchronize()
        start = time.perf_counter()
        run_update(engine, {"sst2": 0}, slots, data, device, 0, u)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        masks = [data.batch(s, torch.device("cpu"))["attention_mask"] for s in slots]
        flops.append(update_flops(params, cfg.num_hidden_layers, cfg.hidden_size, masks))
    steady = slice(args.updates // 5, None)          # the first fifth warms up kernels and allocators
    achieved = sum(flops[steady]) / sum(times[steady])
    result = {"gpu": torch.cuda.get_device_name(0), "peak_tflops_bf16": args.peak_tflops,
              "achieved_tflops": achieved / 1e12, "mfu": achieved / (args.peak_tflops * 1e12),
              "median_update_s": float(np.median(times[steady])),
              "update_s_p10_p90": [float(q) for q in np.percentile(times[steady], [10, 90])],
              "parameters": sum(p.numel() for p in model.parameters()), "matmul_parameters": params,
              "settings": {"model": recipe.model.name_or_path, "slots": args.slots, "rows": args.rows,
                           "max_length": LENGTH, "precision": "bf16", "zero_stage": args.zero_stage,
                           "updates": args.updates}}
    print(f"{result['gpu']}: {result['achieved_tflops']:.2f} TFLOP/s, MFU {100 * result['mfu']:.2f}%")
    write_result(args.out, result)
    if args.profile:
        profile_updates(args.profile, lambda u: run_update(engine, {"sst2": 0}, slots_of(u), data, device, 0, u),
                        range(args.updates, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
