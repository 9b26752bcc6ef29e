"""The DeepSpeed config for a recipe: a pure function of the recipe, the world size and the device.

Gradient accumulation is the number of slots each worker runs per update (S / W): DeepSpeed divides
each micro-step's loss by it and the all-reduce averages over W workers, so the gradient of one
optimizer step is the mean over all S slots. Setting it to the real number of micro-steps also
matters for ZeRO-2, which otherwise keeps only the last micro-step's gradient.
"""
from __future__ import annotations

__all__ = ["deepspeed_config", "use_bf16"]


def use_bf16(precision: str, on_gpu: bool) -> bool:
    """bf16 on GPU, fp32 on CPU, unless the recipe says which. An explicit bf16 on CPU runs DeepSpeed's
    bf16 path on its CPU accelerator: slow, but the same optimizer and checkpoint files as on GPUs, which
    is how the tests prove the GPU path's bf16 checkpoints on a machine without one."""
    return precision == "bf16" or (precision == "auto" and on_gpu)


def deepspeed_config(recipe, world_size: int, on_gpu: bool) -> dict:
    slots, batch = recipe.train.slots_per_update, recipe.train.batch_size
    if slots % world_size:
        raise ValueError(f"train.slots_per_update={slots} is not a multiple of {world_size} workers")
    accumulation = slots // world_size
    stage = recipe.deepspeed.zero_stage
    config = {
        "train_micro_batch_size_per_gpu": batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": batch * accumulation * world_size,
        "gradient_clipping": recipe.optim.grad_clip,
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": use_bf16(recipe.deepspeed.precision, on_gpu)},
        "steps_per_print": 10**9,
        # HeadAwareAdamW (prefinetune/model/optim.py) is torch AdamW plus a mask on the heads' groups; DeepSpeed
        # checks ZeRO optimizers by exact type, so it has to be allowed by name
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
    }
    if stage > 0:
        config["zero_optimization"].update({"contiguous_gradients": True, "overlap_comm": on_gpu,
                                            "reduce_scatter": True})
    return config
