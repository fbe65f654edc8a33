"""The 0.1.0 recipe, kept so its commands still work: `hf-transfer train` with the same options (under `accelerate
launch` too). To read and fork the flow, use recipes/finetune.py."""

import sys

from hf_transfer.cli import main
from hf_transfer.training import is_main_process

if __name__ == "__main__":
    if is_main_process():
        print("note: recipes/train.py is replaced by recipes/finetune.py (same options).", file=sys.stderr, flush=True)
    sys.exit(main(["train", *sys.argv[1:]]))
