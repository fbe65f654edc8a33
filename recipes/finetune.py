"""Adapt an image classifier to your labels with the transformers Trainer: linear probe, full fine-tune or any
peft method of `hf-transfer strategies`. The same run as `hf-transfer train`, written out so you can fork it.

Hyper-parameters live in YAML (recipes/configs/{linear,full,lora,dora}.yaml); any key can be overridden on the
command line with the names of `hf-transfer train --help`::

    python recipes/finetune.py --config recipes/configs/lora.yaml --output-dir runs/lora
    python recipes/finetune.py --model google/vit-base-patch16-224 --data my_images/ --output-dir runs/vit \\
        --strategy dora --max-steps 500
    # DDP on every GPU of this machine; 2 CPU processes with cpu_ddp.yaml (testing); FSDP with fsdp.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu_ddp.yaml recipes/finetune.py --config ...
    # continue a killed run from its last complete checkpoint
    accelerate launch ... recipes/finetune.py --config recipes/configs/lora.yaml --output-dir runs/lora --resume

For a loop you can change line by line, see recipes/finetune_no_trainer.py; for a probe in seconds,
recipes/linear_probe.py.
"""

import sys
import time

from transformers import TrainerCallback

from hf_transfer.config import parse_run_config
from hf_transfer.training.distributed import is_main_process
from hf_transfer.training.lost_peers import watch_peers
from hf_transfer.training.run import run_training


class Throughput(TrainerCallback):
    """An example of extending the run: a TrainerCallback that reports training images per second.

    run_training(run, callbacks=[...]) adds callbacks to the run's own (early stopping, overfitting
    guardrail, staged unfreeze, the strategy's); they see every step, evaluation and save.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step  # not 0 after --resume

    def on_train_end(self, args, state, control, **kwargs):
        images = (state.global_step - self.first_step) * args.train_batch_size * args.gradient_accumulation_steps
        images *= args.world_size
        if state.is_world_process_zero:
            print(f"throughput: {images / (time.perf_counter() - self.started):.1f} training images/s", flush=True)


def main(argv=None):
    # 1. Load the config: --config YAML first, then command-line flags; validated (a typo names the fix).
    run = parse_run_config(argv)
    if is_main_process():
        print(f"{run.strategy.strategy} on {run.model.model} with {run.data.data} -> {run.train.output_dir}", flush=True)

    # 2. Train. run_training goes through named stages: prepare (output folder, data splits, the checkpoint with
    #    a new head for your labels, the strategy) -> fit (Trainer, accelerate underneath: DDP/FSDP, mixed
    #    precision, checkpoints) -> final evaluation of the kept model -> summary -> save -> push (--push-to-hub).
    #    Several processes or machines: if one dies or hangs, the others stop with its rank and the resume command.
    with watch_peers(run.train):
        result = run_training(run, callbacks=[Throughput()])

    # 3. Report: the honest numbers are on the held-out split (test if the data has one, else validation).
    if is_main_process():
        metrics = result.metrics
        print(f"{metrics['split']} accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; run folder "
              f"{result.output_dir}\n  use it: transformers.pipeline('image-classification', model='{result.output_dir}')"
              f"\n  share it: hf-transfer push --model-dir {result.output_dir} --repo-id NAMESPACE/NAME", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
