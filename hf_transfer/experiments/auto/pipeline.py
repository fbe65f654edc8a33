"""The whole auto run: check the output folder (and, with --resume, that no option changed), check the Hub token
before any work when pushing, run the stages not done yet, rewrite auto.json and auto.md after each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_transfer.experiments.auto.report import write_report
from hf_transfer.experiments.auto.settings import AutoSettings
from hf_transfer.experiments.auto.stages import STAGES, AutoContext, Stage, run_stages, stage_path
from hf_transfer.run_folder import write_json

AUTO_PLAN = "auto_plan.json"  # the settings of the run in this folder: --resume refuses others, naming them


def auto(settings: AutoSettings, output_dir: str | Path, *, resume: bool = False, stop_after: str | None = None,
         command: str | None = None, progress=print, stages: list[Stage] | None = None) -> dict[str, Any]:
    """Run (or continue) auto in ``output_dir``; returns the auto.json payload. ``stop_after``: a stage name."""
    from hf_transfer.experiments.compare.plan import check_output_dir

    stages = STAGES if stages is None else stages
    names = [s.name for s in stages]
    if stop_after is not None and stop_after not in names:
        from hf_transfer.errors import ConfigError

        raise ConfigError(f"--stop-after {stop_after!r} is not a stage; the stages are {', '.join(names)}.")
    settings.validate()
    out = Path(output_dir).expanduser()
    if check_output_dir(out, settings, resume=resume, plan_file=AUTO_PLAN, kind="auto run"):
        write_json(out / AUTO_PLAN, {"footing": settings.footing()})
    pushes = "push" in names and (stop_after is None or names.index(stop_after) >= names.index("push"))
    if settings.push_to_hub and pushes and not stage_path(out, "push").is_file():
        from hf_transfer.publish.hub import check_write_access

        check_write_access(settings.push_to_hub)  # a missing or bad token fails now, not after the training
    ctx = AutoContext(settings=settings, out=out, progress=progress)
    try:
        run_stages(ctx, stages, stop_after=stop_after, after_stage=lambda: write_report(ctx, command=command))
    finally:
        payload = write_report(ctx, command=command)
    return payload
