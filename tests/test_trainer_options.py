"""Every TrainingArguments field reachable (CLI, YAML, Python), the ones hf_transfer sets refused with the fix,
and gradient checkpointing on every strategy and backbone family (hf_transfer/training/checkpointing.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForImageClassification, TrainerCallback, TrainingArguments

from hf_transfer import api, cli, run_folder
from hf_transfer.config import (
    FIELD_NAMES,
    TRAINER_CHOSEN,
    RunConfig,
    StrategyConfig,
    parse_run_config,
    trainer_option_names,
)
from hf_transfer.errors import ConfigError
from hf_transfer.training.arguments import (
    OVERRIDABLE_DEFAULTS,
    build_training_arguments,
    checkpointing_arguments,
    chosen_arguments,
)
from hf_transfer.training.checkpointing import prepare_checkpointing
from hf_transfer.training.run import run_from_argv
from hf_transfer.training.strategies import apply_strategy, get_strategy

BASE = ["--model", "m", "--data", "d", "--output-dir", "o"]


class KeepTrainer(TrainerCallback):
    """Keeps what the Trainer started with: its arguments and its optimizer."""

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.args, self.optimizer = args, optimizer


# ------------------------------------------------------------------------------------ reachable, refused

def test_every_training_argument_is_curated_passed_through_or_refused():
    names = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    passed = trainer_option_names()
    assert names == (names & FIELD_NAMES) | passed | set(TRAINER_CHOSEN)
    assert not passed & set(TRAINER_CHOSEN) and not passed & FIELD_NAMES
    assert {"gradient_checkpointing", "max_grad_norm", "optim", "auto_find_batch_size", "save_steps"} <= passed


def test_what_hf_transfer_sets_is_curated_refused_or_a_default_an_option_overrides(tmp_path):
    """A field arguments.py sets is an hf_transfer option, refused (TRAINER_CHOSEN) or a default that a pass-through
    value overrides; a refused field is one arguments.py sets, or one the run cannot honour."""
    run = parse_run_config(BASE)
    chosen = set(chosen_arguments(run, tmp_path, strategy=get_strategy("lora")))
    assert chosen <= FIELD_NAMES | set(TRAINER_CHOSEN) | OVERRIDABLE_DEFAULTS
    assert OVERRIDABLE_DEFAULTS <= chosen and OVERRIDABLE_DEFAULTS <= trainer_option_names()
    unused = {"resume_from_checkpoint", "local_rank", "do_train", "do_eval", "do_predict", "label_smoothing_factor",
              "prediction_loss_only", "eval_do_concat_batches", "batch_eval_metrics"}
    unused |= {name for name in TRAINER_CHOSEN if name.startswith("hub_")}
    assert set(TRAINER_CHOSEN) - chosen == unused


@pytest.mark.parametrize("flag, fix", [("--fp16", "--mixed-precision"), ("--bf16", "--mixed-precision"),
                                       ("--load-best-model-at-end", "--metric-for-best-model"),
                                       ("--save-strategy", "--eval-strategy"), ("--warmup-steps", "--warmup-fraction"),
                                       ("--hub-model-id", "--push-to-hub"), ("--remove-unused-columns", "pixel_values"),
                                       ("--resume-from-checkpoint", "--resume")])
def test_a_field_hf_transfer_sets_is_refused_with_the_option_to_use(flag, fix):
    with pytest.raises(ConfigError, match=rf"{flag} \(.*{fix}"):
        parse_run_config([*BASE, flag, "1"])


def test_refused_and_misspelt_names_from_yaml_and_python(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: m\ndata: d\ntrain:\n  output_dir: o\n  fp16: true\n  max_grad_nrom: 0.5\n")
    with pytest.raises(ConfigError, match=r"'fp16' \(set by --mixed-precision.*'max_grad_nrom' \(did you mean "
                                          r"'max_grad_norm'\?\)"):
        parse_run_config(["--config", str(config)])
    with pytest.raises(ConfigError, match=r"train\(\) got unknown keyword argument\(s\) 'bf16' \(set by "
                                          r"--mixed-precision.*'optimm' \(did you mean 'optim'"):
        api.train(model="m", data="d", output_dir=str(tmp_path / "o"), bf16=True, optimm="sgd")
    with pytest.raises(ConfigError, match=r"--gradient-checkpointng \(did you mean --gradient-checkpointing"):
        parse_run_config([*BASE, "--gradient-checkpointng"])


def test_options_from_cli_and_yaml_become_training_arguments(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: m\ndata: d\noutput_dir: o\ntrain:\n  optim: sgd\n  max_grad_norm: 0.25\n")
    run = parse_run_config(["--config", str(config), "--max-grad-norm", "0.5", "--eval-strategy", "steps",
                            "--eval-steps", "3", "--save-steps", "6", "--auto-find-batch-size",
                            "--accelerator-config", '{"split_batches": true}'])
    assert run.trainer_options == {"optim": "sgd", "max_grad_norm": 0.5, "save_steps": 6.0, "auto_find_batch_size": True,
                                   "accelerator_config": {"split_batches": True}}
    args = build_training_arguments(run, tmp_path, strategy=get_strategy("lora"))
    assert (args.optim, args.max_grad_norm, args.save_steps, args.auto_find_batch_size) == ("sgd", 0.5, 6, True)
    assert args.accelerator_config.split_batches and args.accelerator_config.non_blocking is False  # merged
    assert args.eval_steps == 3 and args.load_best_model_at_end  # hf_transfer's own values stay


def test_a_value_transformers_refuses_is_a_config_error_naming_the_options(tmp_path):
    run = parse_run_config([*BASE, "--eval-strategy", "steps", "--eval-steps", "3", "--save-steps", "5"])
    with pytest.raises(ConfigError, match=r"round multiple.*save_steps=5"):
        build_training_arguments(run, tmp_path, strategy=get_strategy("lora"))


def test_save_steps_without_step_evaluations_is_refused(tmp_path):
    run = parse_run_config([*BASE, "--save-steps", "6"])  # --eval-strategy epoch: save_steps would do nothing
    with pytest.raises(ConfigError, match="--save-steps 6 applies with --eval-strategy steps"):
        build_training_arguments(run, tmp_path, strategy=get_strategy("lora"))


def test_ddp_timeout_is_curated():
    assert parse_run_config([*BASE, "--ddp-timeout", "30"]).train.ddp_timeout == 30
    assert "ddp_timeout" not in trainer_option_names()


def test_trainer_options_round_trip_through_yaml(tmp_path):
    run = RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", "gradient_checkpointing": True,
                               "lr_scheduler_kwargs": '{"num_cycles": 2}'}).validate()
    run.save_yaml(tmp_path / "r.yaml")
    saved = yaml.safe_load((tmp_path / "r.yaml").read_text())
    assert saved["train"]["gradient_checkpointing"] is True and saved["train"]["lr_scheduler_kwargs"] == {"num_cycles": 2}
    assert RunConfig.from_yaml(tmp_path / "r.yaml") == run


# ------------------------------------------------------------------------------------------- real runs

def _train_argv(model, data, out, *extra):
    return ["--model", str(model), "--data", str(data), "--output-dir", str(out), "--strategy", "lora",
            "--max-steps", "2", "--per-device-train-batch-size", "8", "--dataloader-num-workers", "0",
            "--eval-strategy", "steps", "--eval-steps", "2", "--examples-per-class", "1", "--no-calibrate",
            "--learning-rate", "5e-3", *extra]


def test_cli_options_reach_the_trainer_the_record_and_a_replay(tiny_checkpoints, image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    keep = KeepTrainer()
    run_from_argv(_train_argv(tiny_checkpoints("vit"), image_folder, out, "--max-grad-norm", "0.5", "--optim",
                              "adamw_torch", "--save-steps", "4", "--auto-find-batch-size", "--gradient-checkpointing",
                              "--accelerator-config", '{"even_batches": true}'),
                  callbacks=[keep])
    args = keep.args
    assert (args.max_grad_norm, args.optim, args.save_steps, args.auto_find_batch_size) == (0.5, "adamw_torch", 4, True)
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert type(keep.optimizer.optimizer if hasattr(keep.optimizer, "optimizer") else keep.optimizer).__name__ == "AdamW"
    assert "gradient checkpointing: on (the model's own, non-reentrant)" in capsys.readouterr().out

    record = yaml.safe_load((out / run_folder.CONFIG_FILE).read_text())["train"]
    assert {k: record[k] for k in ("max_grad_norm", "optim", "save_steps", "auto_find_batch_size",
                                   "gradient_checkpointing")} == {"max_grad_norm": 0.5, "optim": "adamw_torch",
                                                                  "save_steps": 4.0, "auto_find_batch_size": True,
                                                                  "gradient_checkpointing": True}
    hyper = json.loads((out / "training_summary.json").read_text())["hyperparameters"]
    assert hyper["max_grad_norm"] == 0.5 and hyper["optim"] == "adamw_torch" and hyper["gradient_checkpointing"] is True
    assert hyper["accelerator_config"]["even_batches"] is True  # written as a mapping, as transformers writes it

    replay = parse_run_config(["--config", str(out / run_folder.CONFIG_FILE)])
    rebuilt = build_training_arguments(replay, out, strategy=get_strategy("lora"))
    assert rebuilt.to_dict() == args.to_dict()


def test_python_options_reach_the_trainer_on_a_timm_backbone(tiny_checkpoints, image_folder, tmp_path):
    keep = KeepTrainer()
    api.train(model=tiny_checkpoints("timm_vit"), data=image_folder, output_dir=tmp_path / "run", strategy="full",
              max_steps=2, per_device_train_batch_size=8, dataloader_num_workers=0, eval_strategy="steps",
              eval_steps=2, examples_per_class=1, calibrate=False, callbacks=[keep],
              optim="sgd", max_grad_norm=0.3, gradient_checkpointing=True, adam_beta1=0.5)
    assert (keep.args.optim, keep.args.max_grad_norm, keep.args.activation_checkpointing) == ("sgd", 0.3, True)
    optimizer = getattr(keep.optimizer, "optimizer", keep.optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    assert any(group["is_head"] for group in optimizer.param_groups)  # hf_transfer's groups, with the head's floor


def test_the_cached_probe_says_trainer_options_do_nothing(tiny_checkpoints, image_folder, tmp_path, capsys):
    cli.main(["train", *_train_argv(tiny_checkpoints("vit"), image_folder, tmp_path / "run", "--strategy", "linear",
                                    "--max-grad-norm", "0.5", "--gradient-checkpointing")])
    err = capsys.readouterr().err
    assert "runs no Trainer, so the Trainer options max_grad_norm, gradient_checkpointing have no effect" in err


# ---------------------------------------------------------------------------------- gradient checkpointing

def _three_steps(folder: Path, strategy: str, *, checkpointing: bool, reentrant: bool = False):
    """Per-step losses, trained weights and the number of Linear/Conv2d calls of 2 AdamW steps, checkpointing
    switched on as the Trainer does it (its ``activation_checkpointing_enable`` call with the run's kwargs)."""
    torch.manual_seed(0)
    applied = apply_strategy(AutoModelForImageClassification.from_pretrained(folder),
                             StrategyConfig(strategy=strategy, lora_r=4))
    options = {"gradient_checkpointing": checkpointing}
    if reentrant:
        options["gradient_checkpointing_kwargs"] = {"use_reentrant": True}
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none",
                             **checkpointing_arguments(options, strategy=applied.strategy))
    line = prepare_checkpointing(applied, args, asked=checkpointing)
    model = applied.model
    if args.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=args.activation_checkpointing_kwargs)
    calls = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_forward_hook(lambda *_: calls.append(1))
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    pixels, labels = torch.randn(6, 3, 32, 32, generator=generator), torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(pixel_values=pixels).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, trained))
    return losses, [p.detach() for p in trained], len(calls), moved, line


# Every strategy family (frozen backbone, every weight, LoRA, DoRA, another peft method) on a transformers and a timm
# ViT; ConvNeXt (no checkpointing of its own in transformers: checkpointing.make_checkpointable) and a timm ResNet.
CHECKPOINTING_CASES = [(arch, strategy) for arch in ("vit", "timm_vit") for strategy in ("linear", "full", "lora",
                                                                                        "dora", "loha")]
CHECKPOINTING_CASES += [("convnext", "full"), ("convnext", "lora"), ("convnext", "dora"), ("timm_resnet", "lora")]
# The other families the suite builds, fully trained: DeiT (two heads), BEiT, Swin, DINOv2 and ResNet (stage blocks).
CHECKPOINTING_CASES += [(arch, "full") for arch in ("deit", "beit", "swin", "dinov2", "resnet")]


@pytest.mark.parametrize("arch, strategy", CHECKPOINTING_CASES)
def test_gradient_checkpointing_trains_the_same(arch, strategy, tiny_checkpoints):
    plain_losses, plain_weights, plain_calls, plain_moved, _ = _three_steps(tiny_checkpoints(arch), strategy,
                                                                           checkpointing=False)
    losses, weights, calls, moved, line = _three_steps(tiny_checkpoints(arch), strategy, checkpointing=True)
    assert losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6)
    for a, b in zip(weights, plain_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    unused = 1 if arch == "dinov2" else 0  # DINOv2's mask token: a weight its forward pass never uses
    assert moved == plain_moved  # checkpointing starves no tensor of its gradient
    assert moved == len(weights) - unused or strategy == "linear" and moved > 0  # every trained tensor got a gradient
    if strategy == "linear":
        assert calls == plain_calls and line.startswith("gradient checkpointing: off for linear")
    else:
        assert calls > plain_calls, "checkpointed blocks run their forward again in the backward pass"
        assert line.startswith("gradient checkpointing: on")


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_reentrant_checkpointing_still_trains_adapters_behind_a_frozen_embedding(arch, tiny_checkpoints):
    plain_losses, plain_weights, *_ = _three_steps(tiny_checkpoints(arch), "lora", checkpointing=False)
    losses, weights, _, moved, line = _three_steps(tiny_checkpoints(arch), "lora", checkpointing=True, reentrant=True)
    assert "reentrant" in line and "non-reentrant" not in line
    assert losses == pytest.approx(plain_losses, rel=1e-5, abs=1e-6) and moved == len(weights)
    for a, b in zip(weights, plain_weights):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_under_ddp_trains_the_same(tmp_path):
    """Two processes (gloo): checkpointing under DDP, with the full strategy's unused-parameter search, ends with
    the weights of the same run without it."""
    from launch_helpers import DRIVER, REPO, launch_ddp, make_tiny_assets, max_weight_diff, offline_env, tiny_args

    model, data = make_tiny_assets(tmp_path)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    runs = "full@--gradient-checkpointing,full,lora@--gradient-checkpointing,lora"
    launch_ddp(script, [str(tmp_path / "out"), runs, *tiny_args(model, data, max_steps=3, calibrate="false")],
               env=offline_env(tmp_path / "cache"), cwd=REPO)
    for strategy in ("full", "lora"):
        with_it, without = tmp_path / "out" / f"{strategy}@--gradient-checkpointing", tmp_path / "out" / strategy
        assert max_weight_diff(with_it / "model.safetensors", without / "model.safetensors") < 1e-6
        summary = json.loads((with_it / "training_summary.json").read_text())
        assert summary["hyperparameters"]["gradient_checkpointing"] is True and summary["hyperparameters"]["world_size"] == 2
