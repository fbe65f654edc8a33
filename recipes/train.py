"""Train a Hugging Face image classifier on your labels: linear probe, full fine-tune or a peft adapter.

Launch it like any accelerate script; every option comes from the YAML (``--config``) and any key can be
overridden on the command line (``--max-steps 10``, ``--strategy dora``, ...)::

    # one process (GPU if there is one, else CPU)
    python recipes/train.py --config recipes/configs/lora.yaml --output-dir runs/lora
    # DDP on all GPUs of this machine
    accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml --num_processes 8 \\
        recipes/train.py --config recipes/configs/full.yaml --output-dir runs/full
    # DDP with 2 CPU processes (testing)
    accelerate launch --config_file recipes/accelerate/cpu_ddp.yaml recipes/train.py --config recipes/configs/linear.yaml
    # continue a killed run from its last complete checkpoint
    accelerate launch ... recipes/train.py --config recipes/configs/lora.yaml --output-dir runs/lora --resume

`hf-transfer train` takes the same options. Replaced by recipes/finetune.py (the same run, written out to read
and fork, with the same options); this script keeps working for the commands written for 0.1.0.
"""

import sys

from hf_transfer.training.distributed import is_main_process
from hf_transfer.training.run import run_from_argv

if __name__ == "__main__":
    if is_main_process():
        print("note: recipes/train.py is replaced by recipes/finetune.py (same options).", file=sys.stderr, flush=True)
    run_from_argv()
