"""LoRA in fine-tuning (finetune.lora): peft's adapters on the backbone's linear layers, so that only they
and the task's head train; at export the adapters are merged into a stock backbone, and written alone.

    started = add_lora(model, recipe.finetune.lora)      # the worker, after the head is chosen
    write_adapter = merge_lora(model, recipe)           # the export, once the trained weights are loaded
    write_adapter(export_folder)                        # adapter/: adapter_config.json, adapter_model.safetensors

The adapter folder is peft's own layout: `PeftModel.from_pretrained(AutoModel.from_pretrained(BASE),
"EXPORT/adapter")` is the trained backbone again, BASE the model fine-tuned (the recipe's model). The head
is not in it: it is in heads.safetensors and the task's stock folder, as for full fine-tuning.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

__all__ = ["add_lora", "merge_lora", "check_lora", "ADAPTER_FOLDER"]

ADAPTER_FOLDER = "adapter"


@contextmanager
def _quiet_peft():
    """peft asks transformers 5 a deprecated question (is_gradient_checkpointing) on every wrap and merge:
    a FutureWarning per worker that says nothing to a user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _config(lora, backbone, frozen_layers: int = 0):
    """peft's LoraConfig for the recipe's section; never adapted: the pooler (frozen, read by no head: a
    trainable parameter that no rank's graph touches has no place in a ZeRO run) and the lower
    `frozen_layers` encoder layers (a CA-MTL backbone's frozen half: CA-MTL trains only the layers above)."""
    from peft import LoraConfig
    from torch import nn

    frozen = set()
    if frozen_layers:
        from prefinetune.model.camtl import encoder_layers

        frozen = {id(m) for layer in encoder_layers(backbone)[:frozen_layers] for m in layer.modules()}
    excluded = [name for name, module in backbone.named_modules() if isinstance(module, nn.Linear)
                and (name.split(".")[0] == "pooler" or id(module) in frozen)]
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      exclude_modules=excluded or None, bias="none")


def _frozen_layers(model) -> int:
    """The CA-MTL-frozen lower layers of a built model (0 without conditioning)."""
    conditioning = getattr(model, "conditioning", None)
    return conditioning.frozen if conditioning is not None else 0


def check_lora(recipe) -> None:
    """The recipe's finetune.lora fits its backbone (target modules there; a type peft knows), checked on
    a weightless copy before any worker or trial starts; RecipeError names the key."""
    import torch
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModel

    from prefinetune.model.multitask import camtl_spec
    from prefinetune.model.source import resolve_model_source
    from prefinetune.recipe.config import RecipeError

    m = recipe.model
    config = AutoConfig.from_pretrained(resolve_model_source(m.name_or_path), revision=m.revision,
                                        trust_remote_code=m.trust_remote_code)
    with torch.device("meta"):
        backbone = AutoModel.from_config(config, trust_remote_code=m.trust_remote_code)
    frozen, spec = 0, camtl_spec(m)
    if spec is not None:
        from prefinetune.model.camtl import encoder_layers, frozen_layer_count

        frozen = frozen_layer_count(spec.freeze_bottom_layers, len(encoder_layers(backbone)))
    try:
        with _quiet_peft():
            get_peft_model(backbone, _config(recipe.finetune.lora, backbone, frozen))
    except ValueError as err:
        raise RecipeError(f"finetune.lora does not fit the {config.model_type} backbone of "
                          f"{m.name_or_path}: {err}") from None


def add_lora(model, lora) -> str:
    """Wrap `model.backbone` in a peft LoRA model (every backbone weight frozen, the adapters' B at zero,
    so the model computes what it did); returns what was done, for the console."""
    from peft import get_peft_model

    skipped = _frozen_layers(model)
    config = _config(lora, model.backbone, skipped)
    with _quiet_peft():
        model.backbone = get_peft_model(model.backbone, config)
    adapters = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.backbone.parameters() if not p.requires_grad)
    modules = sorted(model.backbone.peft_config["default"].target_modules)
    where = f" (not in the {skipped} CA-MTL-frozen lower layers)" if skipped else ""
    return (f"LoRA r={lora.r} alpha={lora.alpha:g} on {modules}{where}: {adapters:,} adapter parameters train, "
            f"{frozen:,} backbone parameters frozen")


def merge_lora(model, recipe) -> Callable[[Path], dict]:
    """Merge the trained adapters into `model.backbone` (a stock model again) and return the function that
    writes the adapter alone into an export folder (returning what tasks.json says of it)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from prefinetune.export.folder import public_model_name

    wrapped = model.backbone
    config = wrapped.peft_config["default"]
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(wrapped).items()}
    with _quiet_peft():
        model.backbone = wrapped.merge_and_unload()
    config.base_model_name_or_path = public_model_name(recipe.model.name_or_path)

    def write(folder: Path) -> dict:
        out = Path(folder) / ADAPTER_FOLDER
        config.save_pretrained(out)
        save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        return {"lora": {"folder": ADAPTER_FOLDER, "r": config.r, "alpha": config.lora_alpha,
                         "target_modules": sorted(config.target_modules), "merged": True,
                         "base_model": config.base_model_name_or_path}}
    return write
