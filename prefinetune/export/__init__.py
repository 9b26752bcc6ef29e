"""Export: DeepSpeed checkpoint -> fp32 state dict -> Hugging Face folder -> (optionally) the hub.

    from prefinetune.export import export_from_checkpoint, load_exported, push_to_hub
    out = export_from_checkpoint("runs/muppet/checkpoints", recipe, "runs/muppet/export")
    model, info = load_exported(out)

Command line: `python launch/export.py --recipe R --checkpoint DIR --out DIR [--push-to-hub REPO_ID]`.
"""
from prefinetune.export.checkpoint import CheckpointError, state_dict_from_checkpoint
from prefinetune.export.folder import (
    add_task_folders,
    export_from_checkpoint,
    export_model,
    load_exported,
    read_tasks_info,
)
from prefinetune.export.hub import push_to_hub
from prefinetune.export.task_models import task_model, task_model_support

__all__ = ["add_task_folders", "CheckpointError", "state_dict_from_checkpoint", "export_model",
           "export_from_checkpoint", "load_exported", "read_tasks_info", "push_to_hub", "task_model",
           "task_model_support"]
