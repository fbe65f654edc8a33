"""What hf_transfer's metric modules share: their inputs, their options and the checks on both.

Inputs, per example: ``predictions`` are the class scores (a list of C floats: logits or probabilities; the
arg-max is the predicted class) or, where a module allows it, the predicted class id; ``references`` are the
true class ids. Scores let one ``evaluate.combine([...])`` feed accuracy, f1, top-k and ECE the same batch.

Options (``k``, ``n_bins``, ``label_names``) are given when the module is loaded
(``load_metric("top_k_accuracy", k=3)``) or to ``compute``. ``evaluate.combine`` passes the same keywords to
every module it holds, so a module ignores the options that belong to its siblings and refuses any other
keyword (a typo is an error, not a silently ignored setting).

The scripts import this module from the installed package: ``evaluate.load(path)`` copies the script alone.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import datasets
import evaluate
import numpy as np

from hf_transfer.errors import ConfigError

# The numbers themselves: plain numpy, shared with hf_transfer.evaluation.metrics (which must not import evaluate).
from hf_transfer.evaluation.metric_modules.scoring import predicted_ids, scores_and_references  # noqa: F401

#: every option of every hf_transfer metric module, with its default
ALL_OPTIONS: Mapping[str, Any] = {"k": 5, "n_bins": 15, "label_names": None}
#: the options that are whole numbers >= 1, with what they mean (for the error message)
_COUNTS = {"k": "how many top classes count as a hit", "n_bins": "the number of confidence bins"}
SCORES = datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                            "references": datasets.Value("int64")})
IDS = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
_EVALUATE_KEYWORDS = frozenset(inspect.signature(evaluate.EvaluationModule.__init__).parameters) - {"self", "kwargs"}


class ClassificationMetric(evaluate.Metric):
    """An evaluate Metric over class scores (or ids) and reference ids; subclasses define ``score``.

    A subclass's docstring is its documentation: the first paragraph is evaluate's ``description``, the rest
    (Args, Returns, Example) the ``inputs_description`` that evaluate appends to ``compute``'s help.
    """

    OPTIONS: ClassVar[tuple[str, ...]] = ()      # names in ALL_OPTIONS this module uses
    TAKES_IDS: ClassVar[bool] = True             # False: score() gets checked (N, C) scores, (N,) ids

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.options = {name: kwargs.pop(name, ALL_OPTIONS[name]) for name in self.OPTIONS}
        _refuse_unknown(set(kwargs) - _EVALUATE_KEYWORDS, [*self.OPTIONS, *sorted(_EVALUATE_KEYWORDS)], type(self))
        super().__init__(*args, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        description, _, inputs = (inspect.getdoc(self) or "").partition("\n\n")
        return evaluate.MetricInfo(description=description, citation="", inputs_description=inputs,
                                   features=[SCORES, IDS] if self.TAKES_IDS else SCORES)

    def _compute(self, predictions, references, **options: Any) -> dict[str, Any]:
        _refuse_unknown(set(options) - set(ALL_OPTIONS), self.OPTIONS, type(self))
        chosen = {**self.options, **{k: v for k, v in options.items() if k in self.OPTIONS}}
        chosen = {k: _count(v, name=k) if k in _COUNTS else v for k, v in chosen.items()}
        references = np.asarray(references)
        if not self.TAKES_IDS:
            predictions, references = scores_and_references(predictions, references)
        return self.score(predictions, references, **chosen)

    def score(self, predictions, references: np.ndarray, **options: Any) -> dict[str, Any]:
        raise NotImplementedError


def _refuse_unknown(unknown: set[str], known, module: type) -> None:
    if not unknown:
        return
    hints = [f"{name!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, known, 1))
                            else "") for name in sorted(unknown)]
    raise ConfigError(f"The {module.__name__} metric got unknown option(s) {', '.join(hints)}; its options are "
                      f"{list(module.OPTIONS) or 'none'}.")


def _count(value, *, name: str) -> int:
    """``value`` as an int >= 1, or a ConfigError that says what the option means."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1 ({_COUNTS[name]}), not {value!r}.")
    return int(value)
