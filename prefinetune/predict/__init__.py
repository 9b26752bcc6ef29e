"""Predictions from an export: per-task JSONL of a split's rows (labelled or not), and the submission files of
GLUE and SuperGLUE. A stage above export (it loads one) and below the command line.

    prefinetune predict --model runs/X/export --recipe recipes/shared_data_cpu.yaml --data-dir ../shared/data

task_predictions.py reads and predicts one task's split; submission.py lays predictions out as each
benchmark's server takes them; cli/predict.py is the command.
"""
