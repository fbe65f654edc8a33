"""Training: the stages of a run, each a building block that `hf-transfer train` and recipes/finetune.py share.

A run reads as: settings (:func:`parse_run_config`, :func:`resolve_defaults`) → :func:`build_training_arguments`
→ :func:`prepare_output_dir` → data (:mod:`hf_transfer.data`) → :func:`load_model_for_run` → :func:`apply_strategy`
→ :class:`Prepared` → :func:`build_trainer` → :func:`fit` → :func:`final_evaluation` → :func:`summarize` →
:func:`save_run_folder` → :func:`push`. :func:`run_training` is that sequence in one call. Public names are documented in
docs/ARCHITECTURE.md ("Public API and internals"); the modules are internal.
"""

from hf_transfer._exports import lazy_exports

_RUN = "hf_transfer.training.run"

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    # settings
    "parse_run_config": "hf_transfer.config",
    "resolve_defaults": _RUN,
    "build_training_arguments": "hf_transfer.training.arguments",
    "estimate_total_steps": "hf_transfer.training.arguments",
    "check_launch": "hf_transfer.training.distributed",
    "is_main_process": "hf_transfer.training.distributed",
    "watch_peers": "hf_transfer.training.lost_peers",
    "quiet": "hf_transfer.console",
    # the stages of `hf-transfer train`
    "check_resume": "hf_transfer.training.resume",
    "prepare_output_dir": _RUN,
    "load_model_for_run": _RUN,
    "Prepared": _RUN,
    "zero_shot": _RUN,
    "announce": _RUN,
    "check_negative_transfer": _RUN,
    "build_trainer": _RUN,
    "fit": _RUN,
    "interpolate_wise_ft": _RUN,
    "final_evaluation": _RUN,
    "summarize": _RUN,
    "save_run_folder": _RUN,
    "push": _RUN,
    "run_training": _RUN,
    "RunResult": _RUN,
    # strategies and the pieces of a loop of your own
    "get_strategy": "hf_transfer.training.strategies",
    "apply_strategy": "hf_transfer.training.strategies",
    "TransferTrainer": "hf_transfer.training.trainer",
    "build_param_groups": "hf_transfer.training.optim",
    "make_optimizer": "hf_transfer.training.optim",
    "wants_channels_last": "hf_transfer.training.model_step",
    "to_channels_last": "hf_transfer.training.model_step",
    "prepare_checkpointing": "hf_transfer.training.checkpointing",
    "wants_checkpointing": "hf_transfer.training.arguments",
    "PerSampleAugmentation": "hf_transfer.training.augmentation",
    "single_label_loss": "hf_transfer.training.loss",
    "save_model_folder": "hf_transfer.training.save",
    # distillation (hf-transfer distill)
    "DistillConfig": "hf_transfer.training.distillation",
    "DistillationTrainer": "hf_transfer.training.distillation",
    "run_distillation": "hf_transfer.training.distill_run",
    # the linear probe on cached features
    "embed_split": "hf_transfer.training.cached_probe",
    "fit_head": "hf_transfer.training.cached_probe",
    "write_head": "hf_transfer.training.cached_probe",
})
