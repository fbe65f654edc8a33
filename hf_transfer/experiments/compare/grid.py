"""The whole compare: check the output folder, prepare the data, run the cells that are not done, write the answer."""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hf_transfer.experiments.compare.plan import (
    CELLS_DIR,
    COMPARE_JSON,
    COMPARE_MD,
    PLAN_FILE,
    ZERO_SHOT,
    CompareSettings,
    cell_id,
    check_output_dir,
    finished_cells,
    model_checks,
    plan_cells,
    prepare_data,
)
from hf_transfer.experiments.compare.report import (
    build_payload,
    machine_description,
    render_markdown,
    settings_dict,
    write_outputs,
)
from hf_transfer.experiments.compare.runner import CellRunner, cell_resources, run_all
from hf_transfer.run_folder import write_json


def compare(settings: CompareSettings, output_dir: str | Path, *, resume: bool = False, command: str | None = None,
            progress=print) -> dict[str, Any]:
    """Run (or continue) the grid in ``output_dir``; returns the compare.json payload (also written with md/png).

    compare.json and compare.md are rewritten after every cell (a stopped compare leaves its partial tables);
    compare.png at the end.
    """
    settings.validate()
    resources = cell_resources(settings)  # refuses --parallel beyond the GPUs before anything is written
    out = Path(output_dir).expanduser()
    created = check_output_dir(out, settings, resume=resume)
    try:
        cell_data, data_note = prepare_data(settings, out)
    except BaseException:
        if created:  # nothing of a compare was written: a corrected rerun needs no --resume
            shutil.rmtree(out, ignore_errors=True)
        raise
    if created:
        write_json(out / PLAN_FILE, {"footing": settings.footing()})
    runner = CellRunner(settings, out, cell_data, resources)  # its server imports while the checkpoints are checked
    with stopped_by_signals(runner, out):
        checks = model_checks(settings, cell_data, data_note["label_names"], out, strategies=settings.strategies)
        cells, done, todo = _cells_to_run(settings, out, checks)
        meta = {"command": command, "settings": settings_dict(settings), "data_note": data_note, "checks": checks,
                "machine": machine_description(settings)}
        if done:
            progress(f"resuming: {len(done)} finished cell(s) kept, {len(todo)} to run")

        def save_partial():
            payload = build_payload(cells, done, checks, meta)
            write_json(out / COMPARE_JSON, payload)
            (out / COMPARE_MD).write_text(render_markdown(payload))

        run_all(runner, todo, done, checks, progress=progress, after_cell=save_partial)
    payload = build_payload(cells, done, checks, meta)
    write_outputs(payload, out)
    return payload


def _cells_to_run(settings: CompareSettings, out: Path, checks: dict) -> tuple[list[dict], dict[str, dict], list[dict]]:
    """(every cell of the grid, the finished ones by id, the ones still to run)."""
    cells = plan_cells(settings)
    if settings.zero_shot:
        cells = [{"id": cell_id(m, ZERO_SHOT, 0, None), "model": m, "strategy": ZERO_SHOT, "shots": 0,
                  "seed": None} for m in settings.models if checks[m]["zero_shot_possible"]] + cells
    done = finished_cells(out, cells)
    for record in done.values():  # a method a cell found unusable stays skipped on resume
        if record["status"] == "skipped":
            checks[record["model"]]["skipped"].setdefault(record["strategy"], record["reason"])
    todo = [c for c in cells if c["id"] not in done and c["strategy"] not in checks[c["model"]]["skipped"]]
    return cells, done, todo


@contextlib.contextmanager
def stopped_by_signals(runner: CellRunner, out: Path):
    """SIGTERM/SIGINT stop the running cells (finished ones are saved) and end in KeyboardInterrupt; the cells stop
    however the block ends."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} \
        if threading.current_thread() is threading.main_thread() else {}

    def stop(signum, frame):
        runner.stop()
        print(f"compare stopped: the finished cells are saved in {out / CELLS_DIR}; the same command with --resume "
              "continues from them", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        runner.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
