"""Knowledge distillation: a student learns from a trained teacher's soft targets as well as from the labels.

The loss (Hinton et al., 2015) mixes two terms with a weight α (``--distill-alpha``)::

    loss = α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − α) · label loss

A temperature T > 1 (``--temperature``) softens both distributions so the student also learns how the teacher
ranks the wrong classes; T² keeps the gradient of the soft term on the scale of the label term's as T changes.
Multi-label data gets the per-label analogue: binary cross-entropy of sigmoid(student / T) against the soft
targets sigmoid(teacher / T), also scaled by T². The label loss is the run's own (class weighting, label
smoothing, MixUp/CutMix targets: :mod:`hf_transfer.training.loss`).

The teacher runs in eval mode, without gradients, on the very batch the student trains on, after augmentation
and mixing: the soft targets are those of the pixels the student sees. When the two checkpoints normalise or
size their input differently, the student's batch is mapped to the teacher's (undo the student's mean/std,
apply the teacher's, resize). Each process of a DDP run keeps its own teacher copy (nothing to synchronise:
it never changes). An unaugmented, unmixed run caches the teacher's logits per image (keyed by the pixels), so
the teacher runs once per image rather than once per epoch. Both terms are sums divided by the targets the Trainer counted, as the label loss alone is,
so gradient accumulation and several processes give the mean of one big batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer.data.transforms import PreprocessSpec
from hf_transfer.errors import CheckpointError, ConfigError
from hf_transfer.training.loss import LossFunction, multi_label_loss, single_label_loss
from hf_transfer.training.trainer import TransferTrainer


@dataclass
class DistillConfig:
    """What ``hf-transfer distill`` adds to ``hf-transfer train``'s options (the student is ``--student``)."""

    teacher: Optional[str] = field(
        default=None,
        metadata={"help": "The trained teacher: a run folder written by `hf-transfer train` (or a Hub repo of one). "
                  "Its labels must be the data's, same names in the same order."})
    student: Optional[str] = field(
        default=None,
        metadata={"help": "Checkpoint the student starts from (as train's --model): a Hub id, a local folder or "
                  "embedded:efficientnet_lite0. Usually smaller than the teacher."})
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T of the soft targets: higher spreads the teacher's probability over "
                  "more classes. The soft term is scaled by T² (Hinton et al.)."})
    distill_alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the teacher's soft targets in the loss: 1 = KL to the teacher only, 0 = the "
                  "labels only (plain training), between: α·KL + (1−α)·label loss."})

    def validate(self) -> DistillConfig:
        if not self.teacher:
            raise ConfigError("No teacher given: pass --teacher <run folder of a trained model>.")
        if not self.student:
            raise ConfigError("No student given: pass --student <checkpoint>, e.g. a smaller Hub model.")
        if not 0.0 < self.temperature < float("inf"):
            raise ConfigError(f"--temperature must be a positive number, e.g. 2, got {self.temperature!r}.")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ConfigError(f"--distill-alpha must be in [0, 1] (1: teacher only, 0: labels only), "
                              f"got {self.distill_alpha!r}.")
        return self

    def record(self) -> dict[str, Any]:
        return {"teacher": self.teacher, "temperature": self.temperature, "alpha": self.distill_alpha}


# ---------------------------------------------------------------------------------------------- teacher

class Teacher:
    """A trained classifier that turns the student's model input into its own logits, without gradients."""

    def __init__(self, model: nn.Module, *, spec: PreprocessSpec, student_spec: PreprocessSpec, cache: bool = False):
        self.model = model.eval().requires_grad_(False)
        self._mapping = _input_mapping(student=student_spec, teacher=spec)
        # Unaugmented, unmixed runs feed each image with the same pixels every epoch: its logits are kept, keyed
        # by those pixels, so the teacher runs once per image, not once per epoch.
        self.cache: dict[bytes, torch.Tensor] | None = {} if cache else None
        self.forward_images = 0  # images the teacher actually ran on (the rest came from the cache)

    @classmethod
    def of(cls, classifier, *, student_spec: PreprocessSpec, cache: bool = False) -> Teacher:
        """The teacher of an :class:`~hf_transfer.evaluation.inference.ImageClassifier` (shares its model)."""
        spec = PreprocessSpec.from_processor(classifier.processor, source=classifier.source)
        return cls(classifier.model, spec=spec, student_spec=student_spec, cache=cache)

    def to(self, device) -> Teacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, C) float32 logits of the teacher for the student's model input (N, 3, H, W)."""
        if self.cache is None:
            return self._forward(pixel_values)
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest()
                for row in pixel_values.detach().to("cpu", torch.float32)]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            fresh = self._forward(pixel_values[missing]).cpu()
            self.cache.update({keys[i]: row for i, row in zip(missing, fresh)})
        return torch.stack([self.cache[key] for key in keys]).to(pixel_values.device)

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.model.eval()  # the Trainer switches only the student between train and eval
        self.forward_images += len(pixel_values)
        pixels = self._mapping(pixel_values.float()) if self._mapping else pixel_values
        return self.model(pixel_values=pixels).logits.float()


def _input_mapping(*, student: PreprocessSpec, teacher: PreprocessSpec):
    """student-normalised pixels → teacher-normalised pixels at the teacher's size; None when they agree."""
    same_norm = tuple(student.mean) == tuple(teacher.mean) and tuple(student.std) == tuple(teacher.std)
    size = (teacher.height, teacher.width)
    if same_norm and (student.height, student.width) == size:
        return None

    def shape(values):
        return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

    s_mean, s_std, t_mean, t_std = map(shape, (student.mean, student.std, teacher.mean, teacher.std))

    def mapping(pixels: torch.Tensor) -> torch.Tensor:
        device = pixels.device
        raw = pixels * s_std.to(device) + s_mean.to(device)  # back to [0, 1]
        if tuple(raw.shape[-2:]) != size:
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (raw - t_mean.to(device)) / t_std.to(device)

    return mapping


def check_teacher_labels(teacher_labels: list[str], data_labels: list[str], *, teacher: str, data: str) -> None:
    """The teacher's classes must be the data's, name for name and id for id: soft targets are per class id."""
    if list(teacher_labels) == list(data_labels):
        return

    def numbered(names):
        return ", ".join(f"{i}: {n}" for i, n in enumerate(names))

    raise CheckpointError(
        f"The teacher {teacher} was trained on labels [{numbered(teacher_labels)}] but the data {data} has labels "
        f"[{numbered(data_labels)}]: its soft targets would teach the wrong classes. Distil on data with the "
        "teacher's labels (the same class folders), or train a teacher on this data first.")


def load_teacher_classifier(source: str, *, data_labels: list[str], data: str, multi_label: bool):
    """The teacher of ``source`` (run folder or Hub repo) as an ImageClassifier on the CPU, checked against the data."""
    from hf_transfer.evaluation.inference import load_classifier

    classifier = load_classifier(source, device="cpu")
    check_teacher_labels(classifier.labels, data_labels, teacher=source, data=data)
    if classifier.multi_label != multi_label:
        kind = {True: "multi-label", False: "single-label"}
        raise CheckpointError(f"The teacher {source} is a {kind[classifier.multi_label]} classifier but the run is "
                              f"{kind[multi_label]}: pass --multi-label to match the teacher, or pick another teacher.")
    return classifier


# ------------------------------------------------------------------------------------------------- loss

def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float,
                     multi_label: bool) -> torch.Tensor:
    """T² · the summed divergence of the student's tempered scores from the teacher's (N, C) → scalar.

    Single-label: KL(softmax(t/T) ‖ softmax(s/T)) summed over images. Multi-label: binary cross-entropy of
    sigmoid(s/T) against sigmoid(t/T), summed over images and labels (its minimum is the student matching)."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if multi_label:
        summed = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t), reduction="sum")
    else:
        summed = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="sum")
    return summed * temperature ** 2


class DistillationLoss:
    """The Trainer's ``compute_loss_func``: α · soft-target term + (1 − α) · label loss.

    ``teacher_logits`` is set by :class:`DistillationTrainer` for each training batch; evaluation batches have
    none and get the label loss alone. The two terms' running sums are kept for the training log."""

    def __init__(self, label_loss: LossFunction, *, temperature: float, alpha: float, multi_label: bool):
        self.label_loss, self.temperature, self.alpha, self.multi_label = label_loss, temperature, alpha, multi_label
        self.teacher_logits: torch.Tensor | None = None
        self.logged = {"distill_kl": 0.0, "distill_label_loss": 0.0, "batches": 0}

    def __call__(self, outputs, labels, num_items_in_batch=None) -> torch.Tensor:
        label_term = self.label_loss(outputs, labels, num_items_in_batch=num_items_in_batch)
        if self.teacher_logits is None:
            return label_term
        logits = outputs["logits"]
        # the same divisor as the label loss: targets counted over the accumulated batch (labels per image
        # for multi-label, so both terms are means per decision)
        targets = labels.numel() if self.multi_label else len(labels)
        divisor = num_items_in_batch if num_items_in_batch is not None else targets
        soft_term = soft_target_loss(logits, self.teacher_logits.to(logits.device), temperature=self.temperature,
                                     multi_label=self.multi_label) / divisor
        self.logged["distill_kl"] += float(soft_term.detach())
        self.logged["distill_label_loss"] += float(label_term.detach())
        self.logged["batches"] += 1
        return self.alpha * soft_term + (1.0 - self.alpha) * label_term

    def pop_log(self) -> dict[str, float]:
        """Mean of each term per batch since the last call (empty when no training batch ran)."""
        batches = self.logged["batches"]
        means = {k: v / batches for k, v in self.logged.items() if k != "batches"} if batches else {}
        self.logged = {"distill_kl": 0.0, "distill_label_loss": 0.0, "batches": 0}
        return means


def plain_label_loss(multi_label: bool) -> LossFunction:
    """The model's own loss as a function (cross-entropy, or BCE for multi-label) for runs without a custom one."""
    return multi_label_loss(None, smoothing=0.0) if multi_label else single_label_loss(None, smoothing=0.0)


# ---------------------------------------------------------------------------------------------- trainer

class DistillationTrainer(TransferTrainer):
    """:class:`TransferTrainer` whose training loss also pulls the student towards ``teacher``'s soft targets.

    Takes TransferTrainer's arguments; ``compute_loss_func`` (the run's label loss, None for the model's own)
    becomes the label term of a :class:`DistillationLoss`."""

    def __init__(self, *args, teacher: Teacher, distill: DistillConfig, multi_label: bool, **kwargs):
        label_loss = kwargs.pop("compute_loss_func", None) or plain_label_loss(multi_label)
        self.distillation = DistillationLoss(label_loss, temperature=distill.temperature, alpha=distill.distill_alpha,
                                             multi_label=multi_label)
        super().__init__(*args, compute_loss_func=self.distillation, **kwargs)
        self.teacher = teacher.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:  # evaluation and prediction batches: the label loss alone, no teacher pass
            with self.accelerator.autocast():  # the teacher at the student's precision
                self.distillation.teacher_logits = self.teacher(inputs["pixel_values"])
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        finally:
            self.distillation.teacher_logits = None

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add the two terms' means since the last one
            logs = {**logs, **{k: round(v, 6) for k, v in self.distillation.pop_log().items()}}
        super().log(logs, *args, **kwargs)
