"""`python -m prefinetune ...` is the `prefinetune` command: pre-finetune, `finetune` or `compare`."""
import sys

from prefinetune.cli import main

sys.exit(main(sys.argv[1:]))
