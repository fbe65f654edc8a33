"""hf-transfer distill: the loss, the teacher checks and a real distillation run through the command line."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import SIZE, make_checkpoint, quick_run_config

from hf_transfer.data.transforms import PreprocessSpec
from hf_transfer.errors import CheckpointError, ConfigError
from hf_transfer.training.distillation import DistillationLoss, Teacher, plain_label_loss, soft_target_loss

DATA_LABELS = ("cat", "dog", "fish")  # tiny.make_image_folder's classes


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A classifier folder with the data's labels: load_classifier takes it as it takes a run folder."""
    return make_checkpoint("vit", tmp_path_factory.mktemp("teacher"), label_names=DATA_LABELS, seed=1)


# ------------------------------------------------------------------------------------------------- loss

def _fit_student(alpha: float, *, temperature: float, steps: int = 60) -> tuple[float, float]:
    """A linear student trained on hard labels and a soft teacher: (KL to the teacher at T=1, label accuracy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only fight over a shared machine's cores
    try:
        return _fit(alpha, temperature=temperature, steps=steps)
    finally:
        torch.set_num_threads(threads)


def _fit(alpha: float, *, temperature: float, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    teacher_logits = x @ torch.randn(8, 4) * 0.5  # soft: the teacher is far from one-hot on most images
    labels = teacher_logits.argmax(-1)
    student = torch.nn.Linear(8, 4)
    loss_fn = DistillationLoss(plain_label_loss(False), temperature=temperature, alpha=alpha, multi_label=False)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(steps):
        loss_fn.teacher_logits = teacher_logits
        loss = loss_fn({"logits": student(x)}, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = student(x)
        kl = soft_target_loss(logits, teacher_logits, temperature=1.0, multi_label=False) / len(x)
    return float(kl), float((logits.argmax(-1) == labels).float().mean())


def test_kl_only_student_matches_the_teacher_closer_than_label_only():
    kl_teacher_only, _ = _fit_student(1.0, temperature=2.0)
    kl_labels_only, accuracy_labels_only = _fit_student(0.0, temperature=2.0)
    assert kl_teacher_only < 0.01, kl_teacher_only  # α = 1: the student reproduces the teacher's soft scores
    assert kl_labels_only > 5 * kl_teacher_only  # α = 0: hard labels make it over-confident, away from the teacher
    assert accuracy_labels_only > 0.9  # ... while it still learned the labels (plain training)


def test_soft_term_is_zero_at_the_teacher_and_scaled_by_t_squared():
    teacher_logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 0.1]])
    student = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 0.0]])
    for multi_label in (False, True):
        at_teacher = soft_target_loss(teacher_logits, teacher_logits, temperature=2.0, multi_label=multi_label)
        away = soft_target_loss(student, teacher_logits, temperature=2.0, multi_label=multi_label)
        assert away > at_teacher
    assert float(soft_target_loss(teacher_logits, teacher_logits, temperature=2.0, multi_label=False)) == pytest.approx(0, abs=1e-6)
    # T² scaling: KL of tempered softmaxes times T², by hand
    s, t = student / 3.0, teacher_logits / 3.0
    by_hand = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum() * 9.0
    assert float(soft_target_loss(student, teacher_logits, temperature=3.0, multi_label=False)) == pytest.approx(float(by_hand))


def test_evaluation_batches_get_the_label_loss_alone():
    loss_fn = DistillationLoss(plain_label_loss(False), temperature=2.0, alpha=1.0, multi_label=False)
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert float(loss_fn({"logits": logits}, labels)) == pytest.approx(float(expected))  # no teacher logits set


def test_teacher_sees_the_students_pixels_in_its_own_normalisation_and_size():
    student_spec = PreprocessSpec(SIZE, SIZE, (0.5,) * 3, (0.5,) * 3)
    teacher_spec = PreprocessSpec(2 * SIZE, 2 * SIZE, (0.0,) * 3, (1.0,) * 3)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, pixel_values):
            seen.append(pixel_values)
            return type("Out", (), {"logits": pixel_values.mean(dim=(2, 3))})()

    teacher = Teacher(Probe(), spec=teacher_spec, student_spec=student_spec)
    raw = torch.full((1, 3, SIZE, SIZE), 0.25)  # a grey image in [0, 1]
    teacher((raw - 0.5) / 0.5)
    assert seen[0].shape == (1, 3, 2 * SIZE, 2 * SIZE)
    assert torch.allclose(seen[0], torch.full_like(seen[0], 0.25), atol=1e-5)


def test_an_unaugmented_run_runs_the_teacher_once_per_image():
    spec = PreprocessSpec(SIZE, SIZE, (0.5,) * 3, (0.5,) * 3)

    class Probe(torch.nn.Module):
        def forward(self, pixel_values):
            return type("Out", (), {"logits": pixel_values.mean(dim=(2, 3))})()

    teacher = Teacher(Probe(), spec=spec, student_spec=spec, cache=True)
    images = torch.randn(4, 3, SIZE, SIZE)
    first = teacher(images[:3])
    again = teacher(images[[2, 1, 3, 0]])  # a new epoch: other order, one image not seen before
    assert teacher.forward_images == 4
    assert torch.equal(again[:2], first[[2, 1]]) and torch.allclose(again[2], images[3].mean(dim=(1, 2)))


# -------------------------------------------------------------------------------------------- refusals

def test_a_teacher_with_other_labels_is_refused_naming_both(tmp_path, split_image_folder):
    import hf_transfer

    other = make_checkpoint("vit", tmp_path / "other_teacher", label_names=("ant", "bee", "wasp"))
    with pytest.raises(CheckpointError) as refused:
        hf_transfer.distill(teacher=other, student="unused", data=split_image_folder, output_dir=tmp_path / "out",
                            max_steps=1)
    message = str(refused.value)
    assert "0: ant" in message and "2: wasp" in message and "0: cat" in message and "2: fish" in message
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_cached_linear_probe_gets_augmentation_or_is_refused(tmp_path, split_image_folder):
    from hf_transfer.training.distill_run import trainer_path

    run = quick_run_config("m", split_image_folder, tmp_path / "o", strategy="linear")
    assert trainer_path(run).data.augment == "light"  # the cached-feature fit has no teacher
    with pytest.raises(ConfigError, match="--augment none"):
        trainer_path(quick_run_config("m", split_image_folder, tmp_path / "o", strategy="linear", augment="none"))


@pytest.mark.parametrize("values", [{"temperature": 0.0}, {"distill_alpha": 1.5}, {"teacher": None}])
def test_bad_distill_settings_are_refused(values):
    from hf_transfer.training.distillation import DistillConfig

    with pytest.raises(ConfigError):
        DistillConfig(**({"teacher": "t", "student": "s"} | values)).validate()


def test_help_lists_distill_and_train_options(capsys):
    from hf_transfer.cli import main

    with pytest.raises(SystemExit) as done:
        main(["distill", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--teacher" in out and "--distill-alpha" in out and "--max-steps" in out


# ------------------------------------------------------------------------------------------ a real run

def test_distilled_student_trains_loads_in_pipeline_and_reports_the_teacher(tmp_path, teacher, split_image_folder,
                                                                             tiny_checkpoints, capsys):
    from transformers import pipeline

    from hf_transfer.cli import main
    from hf_transfer.publish.model_card import build_model_card

    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(teacher), "--student", str(tiny_checkpoints("resnet")),
                 "--data", str(split_image_folder), "--output-dir", str(out), "--strategy", "full",
                 "--temperature", "3", "--distill-alpha", "0.7", "--max-steps", "4", "--per-device-train-batch-size",
                 "8", "--dataloader-num-workers", "0", "--eval-strategy", "steps", "--eval-steps", "4",
                 "--logging-steps", "1", "--examples-per-class", "1", "--warmup-fraction", "0",
                 "--learning-rate", "5e-3"])
    assert code == 0
    assert "student vs teacher on test" in capsys.readouterr().out

    state = json.loads(next((out / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logs = [h for h in state["log_history"] if "loss" in h]
    assert all(h["distill_kl"] > 0 for h in logs)  # the teacher's term is in every training step's loss
    assert all(h["loss"] == pytest.approx(0.7 * h["distill_kl"] + 0.3 * h["distill_label_loss"], rel=1e-3)
               for h in logs)
    assert logs[-1]["loss"] < logs[0]["loss"]  # it trains

    record = json.loads((out / "training_summary.json").read_text())["distillation"]
    assert (record["teacher"], record["temperature"], record["alpha"]) == (str(teacher), 3.0, 0.7)
    assert record["teacher_cache"] is False and record["teacher_images"] == 8 + 8 + 5 + 8  # augmented: every batch
    # of the 4 steps (21 training images in batches of 8) went through the teacher
    comparison = record["comparison"]
    assert comparison["split"] == "test" and comparison["num_samples"] == 12
    assert {"accuracy", "images_per_s", "params"} <= set(comparison["student"]) and comparison["teacher"]["images_per_s"] > 0

    predictions = pipeline("image-classification", model=str(out), device="cpu")(
        str(next((split_image_folder / "test" / "dog").iterdir())))
    assert {p["label"] for p in predictions} == set(DATA_LABELS)  # the teacher's labels, by name

    card = str(build_model_card(out, repo_id="me/student"))
    assert "## Distillation" in card and "| teacher |" in card and "| student |" in card


# ------------------------------------------------------------------------------------- two processes

DISTILL_DRIVER = "import sys\nfrom hf_transfer.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.mark.slow
def test_distillation_under_ddp_matches_one_process(tmp_path):
    """2 processes x batch 4 (accelerate launch, gloo) against 1 x batch 8: the same losses, terms and weights."""
    from launch_helpers import assert_same_history, history, launch_ddp, make_tiny_assets, max_weight_diff, offline_env

    from hf_transfer.cli import main

    student, data = make_tiny_assets(tmp_path)
    labels = sorted(p.name for p in (data / "train").iterdir())
    ddp_teacher = make_checkpoint("vit", tmp_path / "teacher", label_names=labels, seed=1)
    driver = tmp_path / "driver.py"
    driver.write_text(DISTILL_DRIVER)

    def args(out, batch):
        return ["distill", "--teacher", str(ddp_teacher), "--student", str(student), "--data", str(data),
                "--output-dir", str(out), "--strategy", "full", "--per-device-train-batch-size", str(batch),
                "--max-steps", "3", "--validation-fraction", "0.1", "--learning-rate", "3e-3", "--seed", "7",
                "--dataloader-num-workers", "0", "--logging-steps", "1", "--eval-strategy", "steps",
                "--eval-steps", "3", "--examples-per-class", "1", "--early-stopping-patience", "0"]

    env = offline_env(tmp_path / "cache")
    launch_ddp(driver, args(tmp_path / "ddp", 4), env=env, cwd=tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(args(tmp_path / "single", 8)) == 0
    assert_same_history(history(tmp_path / "ddp"), history(tmp_path / "single"), rtol=1e-3)
    assert max_weight_diff(tmp_path / "ddp" / "model.safetensors", tmp_path / "single" / "model.safetensors") < 1e-4
    summary = json.loads((tmp_path / "ddp" / "training_summary.json").read_text())
    assert summary["distillation"]["comparison"]["student"]["accuracy"] is not None


def test_the_results_table_is_generated_from_the_bench_json():
    """bench/RESULTS.md's distillation table is bench/distill.py's markdown_table of bench/distill.json, not typed."""
    import runpy

    from launch_helpers import REPO

    markdown_table = runpy.run_path(str(REPO / "bench" / "distill.py"))["markdown_table"]
    result = json.loads((REPO / "bench" / "distill.json").read_text())
    assert markdown_table(result) in (REPO / "bench" / "RESULTS.md").read_text()
