"""prefinetune: distributed Muppet-style multi-task pre-finetuning on Ray + DeepSpeed."""
__version__ = "0.1.0"
