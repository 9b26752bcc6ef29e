"""What a finished run says about its tasks: `prefinetune report RUN_DIR` writes RUN_DIR/report/ with the
task covariance similarity of the exported model (Wu, Zhang & Ré 2020), the loss curves and the task mix.
A stage above export and predict (it reads an export and its tasks' rows) and below the command line.

task_similarity.py is the pure math, representations.py the model's features of each task's rows,
plots.py the figures, build.py the report itself.
"""
