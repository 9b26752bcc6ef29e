"""The one home of collectives (prefinetune/distributed/collectives.py): no collective is called anywhere else in
the package, each one returns what torch's own collective gives on real gloo workers, the project's
collectives run at world size 1 when a process group exists (so one GPU exercises the 64-GPU path), and
a run on GPUs starts its group with a CPU backend beside NCCL.

    python -m pytest tests/distributed/test_collectives.py -q
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port, rank_env  # noqa: E402

from prefinetune.distributed import collectives

PACKAGE = Path(__file__).resolve().parents[2] / "prefinetune"
HOME = PACKAGE / "distributed" / "collectives.py"
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "barrier", "reduce", "reduce_scatter", "reduce_scatter_tensor",
               "all_to_all", "all_to_all_single", "gather", "gather_object", "scatter", "scatter_object_list",
               "send", "recv", "isend", "irecv", "monitored_barrier"}
DIST_NAMES = {"torch.distributed", "dist", "deepspeed.comm"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def collective_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call of a torch.distributed / deepspeed.comm collective in `source`, by
    attribute (torch.distributed.all_reduce, dist.barrier) or by a name imported from those modules."""
    tree = ast.parse(source)
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module in ("torch.distributed", "deepspeed.comm") for alias in node.names
                if alias.name in COLLECTIVES}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        owner, _, attr = name.rpartition(".")
        if (attr in COLLECTIVES and owner in DIST_NAMES) or name in imported:
            found.append((node.lineno, name))
    return found


def test_the_scan_finds_every_form_of_a_collective_call():
    source = ("import torch\nimport torch.distributed as dist\nfrom torch.distributed import barrier as b\n"
              "torch.distributed.all_reduce(x)\ndist.all_gather_object(a, b)\nb()\nx.all_reduce()\n"
              "functools.reduce(f, xs)\n")
    assert collective_calls(source) == [(4, "torch.distributed.all_reduce"), (5, "dist.all_gather_object"),
                                        (6, "b")]


def test_no_collective_outside_the_collectives_module():
    outside = {str(path.relative_to(PACKAGE.parent)): calls for path in sorted(PACKAGE.rglob("*.py"))
               if path != HOME and (calls := collective_calls(path.read_text(encoding="utf-8")))}
    assert outside == {}, "call these through prefinetune.distributed.collectives"
    assert collective_calls(HOME.read_text(encoding="utf-8"))          # and the home does call them


def test_backends_and_the_devices_they_serve():
    assert collectives.backend_for(on_gpu=True) == "cpu:gloo,cuda:nccl"
    assert collectives.backend_for(on_gpu=False) == "gloo"
    assert collectives.served_devices("nccl") == {"cuda"}
    assert collectives.served_devices("gloo") == {"cpu"}
    assert collectives.served_devices("cpu:gloo,cuda:nccl") == {"cpu", "cuda"}


def test_the_ray_job_starts_its_group_with_the_gpu_backend_on_gpus():
    """What launcher.train hands Ray Train: Ray's TorchConfig and its NCCL test take the two-backend string."""
    from ray.train.torch.config import TorchConfig, _is_backend_nccl

    from prefinetune.run.driver import torch_config

    assert torch_config(use_gpu=True) == TorchConfig(backend="cpu:gloo,cuda:nccl")
    assert _is_backend_nccl(torch_config(use_gpu=True).backend)
    assert torch_config(use_gpu=False) == TorchConfig(backend="gloo")


def test_without_a_process_group_each_returns_the_callers_value():
    assert not collectives.active() and collectives.world_size() == 1
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(collectives.all_reduce(x, "max"), x) and collectives.all_reduce(x) is not x
    assert collectives.all_gather_object({"a": 1}) == [{"a": 1}]
    assert collectives.broadcast_object("x") == "x"
    with pytest.raises(ValueError, match="all_reduce op must be one of"):
        collectives.all_reduce(x, "mean")


def _counting(name: str, counts: dict):
    """torch.distributed.<name>, counting its calls (the real collective still runs)."""
    real = getattr(torch.distributed, name)

    def call(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return real(*args, **kwargs)
    return call


def _worker(rank: int, world: int, port: int, out: str, backend: str) -> None:
    rank_env(rank, world, port)
    if ":" in backend:        # DeepSpeed (as build_engine calls it) takes a two-backend string as GPUs get it
        from prefinetune.distributed.engine import init_distributed

        init_distributed(on_gpu=False, backend=backend)
    else:
        torch.distributed.init_process_group(backend)
    from prefinetune.run.metrics_log import WindowStats
    from prefinetune.run.step import nonfinite_slot
    from prefinetune.sampling.schedule import Slot

    counts: dict = {}
    for name in ("all_reduce", "all_gather", "all_gather_object"):
        setattr(torch.distributed, name, _counting(name, counts))
    x = torch.tensor([float(rank + 1), -float(rank)], dtype=torch.float64)
    report = {
        "sum": collectives.all_reduce(x).tolist(), "max": collectives.all_reduce(x, "max").tolist(),
        "min": collectives.all_reduce(x, "min").tolist(), "input_unchanged": x.tolist(),
        "gather": [t.tolist() for t in collectives.all_gather(x)],
        "objects": collectives.all_gather_object({"rank": rank}),
        "broadcast": collectives.broadcast_object(f"from {rank}", src=world - 1),
        "backend": torch.distributed.get_backend(),
    }
    collectives.barrier()
    counts.clear()            # what the project's own call sites do in one micro-step and one log window
    loss = torch.tensor(float("nan") if rank == world - 1 else 1.0)
    report["nonfinite"] = nonfinite_slot(loss, Slot(rank, "t", (rank,)), 0)
    stats = WindowStats(["t"])
    report["flush"] = stats.flush()
    report["calls"] = dict(counts)
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("world,backend", [(2, "gloo"), (1, "cpu:gloo")])
def test_collectives_on_real_workers_and_at_world_size_one(tmp_path, world, backend):
    mp.spawn(_worker, args=(world, free_port(), str(tmp_path), backend), nprocs=world, join=True)
    for rank in range(world):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        values = [[float(r + 1), -float(r)] for r in range(world)]
        assert report["sum"] == [sum(v[i] for v in values) for i in range(2)]
        assert report["max"] == [max(v[i] for v in values) for i in range(2)]
        assert report["min"] == [min(v[i] for v in values) for i in range(2)]
        assert report["input_unchanged"] == values[rank]
        assert report["gather"] == values
        assert report["objects"] == [{"rank": r} for r in range(world)]
        assert report["broadcast"] == f"from {world - 1}"
        assert report["backend"] == backend
        assert report["nonfinite"].startswith(f"update 1, slot {world - 1}: task 't' gave a non-finite loss (nan) "
                                              f"on its training rows [{world - 1}]")
        # even alone, the flag and the window sums went through the group: a one-GPU run's path is 64 GPUs'
        assert report["calls"] == {"all_reduce": 3, "all_gather_object": 1}, report["calls"]
