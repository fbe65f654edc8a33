"""Config dataclasses: YAML (flat or sectioned) + command-line overrides, validated with fixes named."""

from __future__ import annotations

import dataclasses

import pytest

from hf_transfer.config import GROUPS, RunConfig, parse_run_config
from hf_transfer.errors import ConfigError


def test_every_field_has_help():
    for group in GROUPS:
        for field in dataclasses.fields(group):
            assert field.metadata.get("help"), f"{group.__name__}.{field.name} has no help text"


def test_yaml_then_cli_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  model: embedded:efficientnet_lite0\ndata:\n  data: some/folder\n"
                      "strategy:\n  strategy: dora\n  lora_r: 4\ntrain:\n  output_dir: out\n  max_steps: 7\n")
    run = parse_run_config(["--config", str(config), "--max-steps", "3", "--strategy", "lora", "--lora_r", "8"])
    assert run.model.model == "embedded:efficientnet_lite0"
    assert run.train.max_steps == 3 and run.strategy.strategy == "lora" and run.strategy.lora_r == 8
    assert run.data.data == "some/folder"


def test_flat_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: m\ndata: d\noutput_dir: o\nresume: true\n")
    run = parse_run_config(["--config", str(config)])
    assert run.train.resume is True


def test_unknown_yaml_key_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: m\ndata: d\noutput_dir: o\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"Unknown config key\(s\): 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        parse_run_config(["--config", str(config)])


def test_unknown_cli_flag_named():
    with pytest.raises(ConfigError, match="--max-stepz"):
        parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o", "--max-stepz", "3"])


def test_required_values_named():
    with pytest.raises(ConfigError, match="pass --model"):
        parse_run_config(["--data", "d", "--output-dir", "o"])
    with pytest.raises(ConfigError, match="pass --output-dir"):
        parse_run_config(["--model", "m", "--data", "d"])


def test_bad_values():
    with pytest.raises(ConfigError, match="--validation-fraction"):
        parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o", "--validation-fraction", "1.5"])
    with pytest.raises(ConfigError, match="--shots-per-class"):
        parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o", "--shots-per-class", "0"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_run_config(["--config", str(tmp_path / "nope.yaml")])


def test_round_trip(tmp_path):
    run = RunConfig.from_dict({"model": "m", "data": "d", "output_dir": "o", "strategy": "ia3"}).validate()
    run.save_yaml(tmp_path / "r.yaml")
    assert RunConfig.from_yaml(tmp_path / "r.yaml").to_dict() == run.to_dict()


def _help(group, name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(group) if f.name == name)


def test_numbers_in_help_texts_are_the_ones_the_code_uses():
    import inspect

    from hf_transfer.config import (
        HEAD_LR_FLOOR,
        NEGATIVE_TRANSFER_SAMPLE_SIZE,
        OVERFITTING_PATIENCE,
        TrainConfig,
        short_float,
    )
    from hf_transfer.training.callbacks import training_callbacks
    from hf_transfer.transferability.negative_transfer import negative_transfer_check

    lr_help = _help(TrainConfig, "learning_rate")
    assert f"at least at {short_float(HEAD_LR_FLOOR)}" in lr_help and "hf-transfer strategies" in lr_help
    assert "5e-4" not in lr_help and "5e-5" not in lr_help  # per-strategy rates live in the registry only
    assert f"{OVERFITTING_PATIENCE} evaluations" in _help(TrainConfig, "overfitting_guardrail")
    run = parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o"])
    assert [cb.patience for cb in training_callbacks(run)] == [OVERFITTING_PATIENCE]
    assert f"up to {NEGATIVE_TRANSFER_SAMPLE_SIZE} training images" in _help(TrainConfig, "negative_transfer_check")
    assert inspect.signature(negative_transfer_check).parameters["sample_size"].default == NEGATIVE_TRANSFER_SAMPLE_SIZE


def test_short_float_writes_rates_as_people_do():
    from hf_transfer.config import short_float

    assert [short_float(x) for x in (5e-5, 1e-3, 3e-3, 5e-4, 1.5e-3, 0.15, 0.0, 200.0)] == [
        "5e-5", "1e-3", "3e-3", "5e-4", "1.5e-3", "0.15", "0", "200"]


@pytest.mark.parametrize(("option", "value", "rule"), [
    ("--learning-rate", "-1", "a positive number"), ("--learning-rate", "0", "a positive number"),
    ("--learning-rate", "nan", "a positive number"), ("--per-device-train-batch-size", "0", "at least 1"),
    ("--per-device-eval-batch-size", "-4", "at least 1"), ("--gradient-accumulation-steps", "0", "at least 1"),
    ("--weight-decay", "-0.1", "0 or more"), ("--num-train-epochs", "-2", "0 or more"),
    ("--max-steps", "-5", "at least -1"), ("--label-smoothing", "1", "in [0, 1)"),
    ("--label-smoothing", "-0.1", "in [0, 1)"), ("--eval-steps", "0", "at least 1"),
    ("--save-total-limit", "0", "at least 1"), ("--lora-r", "0", "at least 1"), ("--lora-dropout", "1.5", "in [0, 1)"),
])
def test_nonsensical_numbers_are_refused_by_name(option, value, rule, capsys):
    from hf_transfer.cli import main

    with pytest.raises(ConfigError, match=rf"^{option} must be {rule.replace('[', '.').replace(')', '.')}, got"):
        parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o", option, value])
    # the command line says so in one line, before any data or model is loaded
    assert main(["train", "--model", "m", "--data", "d", "--output-dir", "o", option, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {option} must be {rule}" in err


def test_the_edges_of_each_range_are_accepted():
    run = parse_run_config(["--model", "m", "--data", "d", "--output-dir", "o", "--learning-rate", "1e-9",
                            "--weight-decay", "0", "--label-smoothing", "0.99", "--max-steps", "-1",
                            "--num-train-epochs", "0.5", "--dataloader-num-workers", "-1", "--lora-dropout", "0"])
    assert run.train.learning_rate == 1e-9 and run.train.max_steps == -1
