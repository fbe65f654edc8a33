"""What the console shows: results on stdout, one progress bar per long phase on stderr, library chatter on request.

Inside :func:`quiet` (every command, :func:`hf_transfer.train` and the other API calls) transformers logs only
errors (no weight-loading "LOAD REPORT", no backend notes) and the progress bars of transformers ("Loading
weights", "Writing model shards"), huggingface_hub and datasets are off; on leaving, each library is put back
exactly as it was, because the API runs inside notebooks whose own settings must survive a run.
``quiet(verbose=True)`` (``--verbose``) leaves the libraries alone. hf_transfer's own warnings (negative
transfer, overfitting, preprocessing, absent classes) reach stderr either way: they are Python warnings or
:func:`warn` lines, which these switches do not touch.

Bars come from :func:`progress`: on stderr, and off when stderr is not a terminal (tqdm's ``disable=None``),
so logs and CI get no bar spam.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator

_VERBOSE = contextvars.ContextVar("hf_transfer_verbose", default=False)


def is_verbose() -> bool:
    """True inside ``quiet(verbose=True)``: the libraries' own logs and bars are shown."""
    return _VERBOSE.get()


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Silence library chatter for the block (unless ``verbose`` or an enclosing block is verbose); restore after."""
    verbose = verbose or is_verbose()
    token = _VERBOSE.set(verbose)
    try:
        if verbose:
            yield
        else:
            with _libraries_silenced():
                yield
    finally:
        _VERBOSE.reset(token)


@contextlib.contextmanager
def _libraries_silenced() -> Iterator[None]:
    # Imported here: `import hf_transfer.console` must stay free; these are loaded by every run anyway.
    import huggingface_hub.utils as hub
    from transformers.utils import logging as transformers_logging

    datasets_logging = _datasets_logging()
    saved = (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled(),
             hub.are_progress_bars_disabled(),
             datasets_logging.is_progress_bar_enabled() if datasets_logging else None)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    hub.disable_progress_bars()
    if datasets_logging:
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        verbosity, transformers_bars, hub_bars_off, datasets_bars = saved
        transformers_logging.set_verbosity(verbosity)
        (transformers_logging.enable_progress_bar if transformers_bars else transformers_logging.disable_progress_bar)()
        (hub.disable_progress_bars if hub_bars_off else hub.enable_progress_bars)()
        if datasets_logging:
            (datasets_logging.enable_progress_bar if datasets_bars else datasets_logging.disable_progress_bar)()


def _datasets_logging():
    """datasets' logging module, or None where datasets is not installed: a Space (app + inference) runs without
    it, so the console must not make it a requirement (imported by name, which Space vendoring does not follow)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        return None
    return importlib.import_module("datasets.utils.logging")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", leave: bool = False):
    """A tqdm bar on stderr for one long phase; disabled when stderr is not a terminal (logs, CI, pipes)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, disable=None,
                dynamic_ncols=True)


def warn(message: str) -> None:
    """A warning the user must see, quiet or not: stderr, never mixed into the results on stdout."""
    print(message, file=sys.stderr, flush=True)
