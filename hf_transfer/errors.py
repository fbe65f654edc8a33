"""Errors raised by hf_transfer.

Every error subclasses :class:`HfTransferError` *and* the builtin it resembles, so callers can catch
either. Messages name the bad input, the likely cause and the fix.
"""

from __future__ import annotations


class HfTransferError(Exception):
    """Base class of every error hf_transfer raises on purpose."""


class ConfigError(HfTransferError, ValueError):
    """A configuration value is invalid or two values contradict each other."""


class CheckpointError(HfTransferError, ValueError):
    """The checkpoint cannot be used: not an image classifier, pickle-only weights, wrong labels, ..."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The model id or folder does not exist (or is not reachable)."""


class DataError(HfTransferError, ValueError):
    """The data set cannot be used as given: missing columns, too few classes or examples, bad images."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data path or data set id does not exist."""


class BadImageError(DataError):
    """An image file cannot be decoded (corrupt, truncated, not an image, or too large)."""


class StrategyError(HfTransferError, ValueError):
    """Unknown strategy / peft method, or a method that cannot apply to this backbone."""


class OutputDirError(HfTransferError, FileExistsError):
    """The output folder already holds a run and would be overwritten."""


class HubError(HfTransferError, RuntimeError):
    """Talking to the Hugging Face Hub failed (auth, permissions, network)."""


class LostProcessError(HfTransferError, RuntimeError):
    """Another process of a multi-process run died or stopped answering (a machine lost or hung)."""


class HfTransferWarning(UserWarning):
    """Base class of the warnings hf_transfer issues: the run goes on, but something deserves a look."""


class PreprocessingWarning(HfTransferWarning):
    """The checkpoint's processor lacks a preprocessing value, so a default was assumed in its place."""


class DataWarning(HfTransferWarning):
    """The data can be used, but some numbers will not mean what they seem (e.g. a class absent from validation)."""
