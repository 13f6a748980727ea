"""Typed errors of SkyRank.

Every error the library raises on bad input is a :class:`SkyRankError` subclass whose message says what is wrong
and how to fix it. ``cli.py`` maps them to exit codes in one table; the library never prints and never returns
``None`` to signal failure.
"""

from __future__ import annotations


class SkyRankError(Exception):
    """Base class of every error SkyRank raises on bad input or bad state.

    ``hint``, when given, is the fix for this particular case (naming the flag or file to change); ``cli.py`` prints
    it instead of the generic hint of the error type.
    """

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class OptionError(SkyRankError, ValueError):
    """An option's value cannot work (the message names the option): caught before any work is done. Also a
    ``ValueError``, as the library raised for bad arguments before it existed."""


class BenchmarkLayoutError(SkyRankError):
    """A benchmark root is missing or does not have the expected folder layout."""


class BadImageError(SkyRankError):
    """One or more images failed to decode. ``paths`` lists them."""

    def __init__(self, message: str, paths: list[str] | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.paths = list(paths or [])


class CheckpointMismatchError(SkyRankError):
    """A checkpoint is missing, unreadable, holds non-finite values, or its keys or shapes do not match the model."""


class MissingWeightsError(SkyRankError):
    """A retriever was asked to build a dataset without weights (it would rank with random features)."""


class UnknownNameError(SkyRankError):
    """An unknown retriever, benchmark or backbone name was requested."""


class OutputError(SkyRankError):
    """The output folder cannot be written (read-only parent, a file in the way, ...)."""


class OutputExistsError(OutputError):
    """The output folder exists and ``overwrite`` was not given (or was refused: not a SkyRank folder)."""


class ValidationError(SkyRankError):
    """A SkyRank dataset folder breaks the schema or an invariant. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message, hint=hint)


class MissingDependencyError(SkyRankError):
    """An optional engine (faiss-gpu, deepspeed, flash-attn, ...) is not installed."""


class PublishError(SkyRankError):
    """Publishing to the Hub was refused or failed."""


class HubUnreachableError(PublishError):
    """The Hub could not be reached (no network, ``HF_HUB_OFFLINE=1``, a wrong ``--endpoint``)."""


class TrainingError(SkyRankError):
    """Training stopped (non-finite loss, mismatched resume state, ...)."""


class EvalFileError(SkyRankError):
    """An evaluation JSON (or its per-query file) is missing, unreadable or not what ``skyrank eval`` writes."""
