"""Find and load hf_transfer's metric modules: ``load_metric(name)`` -> ``evaluate.EvaluationModule``, offline.

``evaluate.load("accuracy")`` downloads the metric script from the Hub (and fails offline, blaming a missing
local file); these modules ship in the package. ``metric_path(name)`` is the folder ``evaluate.load`` takes.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from hf_transfer.errors import ConfigError

METRIC_NAMES = ("accuracy", "f1", "top_k_accuracy", "ece")
FOLDER = Path(__file__).resolve().parent


def _checked(name: str) -> str:
    if name in METRIC_NAMES:
        return name
    close = difflib.get_close_matches(str(name), METRIC_NAMES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"No hf_transfer metric module {name!r}.{hint} The modules are: {', '.join(METRIC_NAMES)}. "
                      "For another metric use evaluate.load(...) (it downloads the script from the Hub).")


def metric_path(name: str) -> Path:
    """The folder holding ``<name>.py``: ``evaluate.load(str(metric_path("f1")))`` loads it by path, offline."""
    return FOLDER / _checked(name)


def load_metric(name: str, **options: Any):
    """The metric module ``name`` (accuracy, f1, top_k_accuracy, ece) as an ``evaluate.EvaluationModule``.

    ``options`` are the module's own (``k=`` for top_k_accuracy, ``n_bins=`` for ece, ``label_names=`` for
    f1) and evaluate's (``keep_in_memory=True``, ``num_process=``/``process_id=`` for distributed use, ...).
    The class is the one ``evaluate.load(metric_path(name))`` finds in the script.
    """
    from evaluate.loading import import_main_class

    module_class = import_main_class(f"{__package__}.{_checked(name)}.{name}")
    return module_class(**options)
