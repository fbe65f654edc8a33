"""The public Python API (`from hf_transfer import train, ...`): keywords like the CLI, light import, several runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny import quick_run_config

import hf_transfer
from hf_transfer import ConfigError, HfTransferError, RunConfig


def test_import_hf_transfer_is_light_and_the_api_resolves_lazily():
    code = ("import sys, hf_transfer\n"
            "light = [m for m in ('torch', 'transformers', 'accelerate', 'datasets') if m in sys.modules]\n"
            "from hf_transfer import train, RunConfig, ConfigError, list_strategies, curve, rank, evaluate, compare\n"
            "after = [m for m in ('torch', 'transformers', 'accelerate', 'datasets') if m in sys.modules]\n"
            "print(light, after, hf_transfer.__version__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[] [] 0.2.0", done.stdout + done.stderr


def test_all_names_resolve_and_unknown_names_fail_like_a_module():
    for name in hf_transfer.__all__:
        assert getattr(hf_transfer, name) is not None, name
    from hf_transfer.evaluation.inference import ImageClassifier, load_classifier
    from hf_transfer.training.run import RunResult

    assert (hf_transfer.load_classifier, hf_transfer.ImageClassifier) == (load_classifier, ImageClassifier)
    assert hf_transfer.RunResult is RunResult and hf_transfer.HfTransferError is HfTransferError
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        hf_transfer.trian  # noqa: B018
    assert {"lora", "linear", "full"} <= set(hf_transfer.list_strategies())


def test_a_misspelt_keyword_is_an_error_that_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"'max_step' \(did you mean 'max_steps'"):
        hf_transfer.train(model="m", data="d", output_dir=tmp_path / "out", max_step=3)
    with pytest.raises(ConfigError, match="'lora_rank' .*'lora_r'"):
        hf_transfer.train(model="m", data="d", output_dir=tmp_path / "out", lora_rank=4)
    with pytest.raises(ConfigError, match="needs model=, data= and output_dir="):
        hf_transfer.train(data="d", output_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="'imag_column' \\(did you mean 'image_column'"):
        hf_transfer.evaluate("m", "d", imag_column="img")
    with pytest.raises(ConfigError, match="'sample' \\(did you mean 'sample_size'"):  # rank's own keyword
        hf_transfer.rank(models=["m"], data="d", sample=10)
    with pytest.raises(ConfigError, match="'seed' \\(did you mean 'seeds'"):
        hf_transfer.curve(model="m", data="d", seed=1)
    with pytest.raises(ConfigError, match="'parallell' \\(did you mean 'parallel'"):  # compare's own keyword
        hf_transfer.compare(models=["m"], data="d", output_dir=tmp_path / "out", parallell=2)
    with pytest.raises(ConfigError, match="'strategy' \\(did you mean 'strategies'"):  # the compare sets it per cell
        hf_transfer.compare(models=["m"], data="d", output_dir=tmp_path / "out", strategy="lora")
    with pytest.raises(ConfigError, match="'max_grad_nrom' \\(did you mean 'max_grad_norm'"):  # a Trainer option
        hf_transfer.compare(models=["m"], data="d", output_dir=tmp_path / "out", max_grad_nrom=0.5)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _settings_seen_by_accelerate():
    """A callback recording the mixed precision accelerate really runs with (the process-wide singleton) and a weak
    reference to the model, to check the run let go of it."""
    import weakref

    from accelerate.state import AcceleratorState
    from transformers import TrainerCallback

    class Record(TrainerCallback):
        def __init__(self):
            self.seen: list[str] = []
            self.model = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.seen.append(str(AcceleratorState().mixed_precision))
            self.model = weakref.ref(model)

    return Record()


def test_two_runs_in_one_process_each_with_its_own_settings(tiny_checkpoints, image_folder, tmp_path):
    """A notebook trains twice: each run gets its strategy and mixed precision, writes its own loadable folder."""
    model = tiny_checkpoints("vit")
    # No use_cpu: without CUDA, hf_transfer runs bf16 as CPU autocast (transformers alone would refuse bf16 here).
    first_seen, second_seen = _settings_seen_by_accelerate(), _settings_seen_by_accelerate()
    # augment="light": the Trainer path (the one that sees callbacks and mixed precision)
    first = hf_transfer.train(model=model, data=image_folder, output_dir=tmp_path / "linear_bf16", strategy="linear",
                              augment="light", mixed_precision="bf16", max_steps=3, per_device_train_batch_size=8,
                              dataloader_num_workers=0, eval_strategy="steps", eval_steps=3, examples_per_class=1,
                              callbacks=[first_seen])
    # Nothing of the bf16 run stays pinned process-wide: a user's own Accelerator (the no-Trainer recipe in the same
    # notebook) may ask for another precision without "AcceleratorState has already been initialized".
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    assert AcceleratorState._shared_state == PartialState._shared_state == GradientState._shared_state == {}
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    config = quick_run_config(model, image_folder, tmp_path / "unused", strategy="lora", lora_r=4)
    second = hf_transfer.train(config=config, output_dir=tmp_path / "lora_fp32", mixed_precision="no",
                               callbacks=[second_seen])
    assert config.train.output_dir == str(tmp_path / "unused") and config.train.mixed_precision == "auto"  # not mutated
    assert (first_seen.seen, second_seen.seen) == (["bf16"], ["no"])
    assert first_seen.model() is None and second_seen.model() is None  # memory released when train() returns
    for result, strategy, precision in ((first, "linear", "bf16"), (second, "lora", "no")):
        summary = json.loads((result.output_dir / "training_summary.json").read_text())
        assert (summary["strategy"], summary["hyperparameters"]["mixed_precision"]) == (strategy, precision)
        assert result.summary["strategy"] == strategy and "accuracy" in result.metrics
        classifier = hf_transfer.load_classifier(str(result.output_dir))
        assert sorted(classifier.labels) == ["cat", "dog", "fish"]
    assert second.summary["hyperparameters"]["lora_r"] == 4  # from the RunConfig
    metrics = hf_transfer.evaluate(second, image_folder)  # a RunResult is a model too
    assert metrics["split"] == "validation" and 0.0 <= metrics["accuracy"] <= 1.0


def test_run_config_and_yaml_are_accepted_as_config(tmp_path):
    from hf_transfer.api import _as_run_config

    run = quick_run_config("m", "d", tmp_path / "o", strategy="ia3")
    assert _as_run_config(run)["strategy"] == "ia3"
    run.save_yaml(tmp_path / "run.yaml")
    assert _as_run_config(tmp_path / "run.yaml") == _as_run_config(run) == _as_run_config(run.to_dict())
    with pytest.raises(ConfigError, match="takes a RunConfig"):
        _as_run_config(42)
    assert isinstance(RunConfig.from_dict(_as_run_config(run)), RunConfig)


def test_rank_and_curve_take_the_commands_keywords_and_write_their_outputs(tiny_checkpoints, split_image_folder,
                                                                         tmp_path):
    model = tiny_checkpoints("vit")
    ranking = hf_transfer.rank(models=[model], data=split_image_folder, output_dir=tmp_path / "rank", sample_size=24,
                               baseline=False, cache_dir=tmp_path / "features")
    assert ranking.recommended_model == str(model) and ranking.label_names == ["cat", "dog", "fish"]
    assert (tmp_path / "rank" / "ranking.json").is_file() and (tmp_path / "rank" / "ranking.png").is_file()
    result = hf_transfer.curve(model=model, data=split_image_folder, output_dir=tmp_path / "curve", shots=[1, "all"],
                               seeds=1, cache_dir=tmp_path / "features", label_column="label")
    assert result["shots"] == [1, "all"] and result["eval_split"] == "test"
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["points"] == result["points"]
