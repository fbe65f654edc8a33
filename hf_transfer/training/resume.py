"""What ``train --resume`` may continue: an unfinished run, under the settings it was started with.

A resumed run picks up the optimizer state, the learning-rate schedule and the data order of its checkpoint: with
another strategy, learning rate or data they no longer mean what the run recorded, so the results would describe
neither setting. The saved ``run_config.yaml`` is compared with the new settings and every changed option is named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hf_transfer import run_folder
from hf_transfer.config import SECTIONS, RunConfig, flatten_sections
from hf_transfer.errors import ConfigError, OutputDirError

# Options that change how a run is watched, published or fed, not what it computes: free to change on resume.
MAY_CHANGE_ON_RESUME = {
    "resume": "it is how a run is continued",
    "verbose": "console output only",
    "report_to": "where the logs go",
    "push_to_hub": "what happens after training",
    "hub_private": "what happens after training",
    "dataloader_num_workers": "the same images in the same order, loaded by more or fewer processes",
    "per_device_eval_batch_size": "evaluation gives the same predictions in any batch size",
    "ddp_timeout": "how long the processes wait for a lost one, not what they compute",
}
# A stream's place is saved per loader worker (stream_state_rank<N>.pt): with --streaming the worker count is fixed.
FIXED_WHEN_STREAMING = ("dataloader_num_workers",)


def check_resume(out: Path, run: RunConfig) -> None:
    """With ``--resume``: refuse a finished run, or options that differ from the run's ``run_config.yaml``."""
    if not run.train.resume:
        return
    refuse_finished(out)
    saved = _saved_settings(out)
    if saved is None:  # stopped before its settings were written: the checkpoint check decides
        return
    now = _plain(flatten_sections(run.to_dict()))
    # An option the saved file lacks (added to hf_transfer since) is not compared: the run never set it.
    free = set(MAY_CHANGE_ON_RESUME) - set(FIXED_WHEN_STREAMING if run.data.streaming else ())
    changed = sorted(k for k in now if k in saved and k not in free and saved[k] != now[k])
    if changed:
        shown = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} → {now.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume: {shown} differ from the run in {out} ({run_folder.CONFIG_FILE}); a resumed run "
                          "continues its checkpoint under its own settings. Resume with the run's settings, or "
                          "start a new run in a new --output-dir.")


def refuse_finished(out: Path) -> None:
    """A run whose metrics are written is finished: resuming it would train past its end (or, under another
    strategy, fail on checkpoints written for the first)."""
    if (out / run_folder.METRICS_FILE).is_file():
        raise OutputDirError(f"--resume: the run in {out} is finished (it has {run_folder.METRICS_FILE}); there is "
                             "nothing to resume. Choose a new --output-dir to train again.")


def _saved_settings(out: Path) -> dict[str, Any] | None:
    path = out / run_folder.CONFIG_FILE
    if not path.is_file():
        return None
    sections = yaml.safe_load(path.read_text()) or {}
    return _plain({k: v for name in SECTIONS for k, v in (sections.get(name) or {}).items()})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """The values as YAML gives them back (tuples as lists), so saved and new settings compare equal."""
    return yaml.safe_load(yaml.safe_dump(values))
