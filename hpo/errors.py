"""Errors that the CLI maps to exit codes.

A :class:`ConfigError` always names the file, the key, the bad value and what is allowed, so a
user can fix the YAML without reading a stack trace::

    >>> err = ConfigError("studies/x.yaml", "budget.n_trials", -1, "an integer >= 1")
    >>> print(err)
    studies/x.yaml: budget.n_trials = -1 is invalid; allowed: an integer >= 1
    >>> err.exit_code
    2
"""

from __future__ import annotations

from typing import Any


class HpoError(Exception):
    """Base class for errors with a message meant for the user (no traceback)."""

    exit_code = 1


class ConfigError(HpoError):
    """A study or search-space file (or a CLI value) is invalid. Exit code 2."""

    exit_code = 2

    def __init__(self, file: str, key: str, value: Any, allowed: str) -> None:
        self.file, self.key, self.value, self.allowed = str(file), key, value, allowed
        super().__init__(f"{self.file}: {key} = {value!r} is invalid; allowed: {allowed}")


class StudyConfigChanged(HpoError):
    """A study file no longer matches the config its study was started with (the difference
    and what to do are in the message). Exit code 2."""

    exit_code = 2


class DataError(HpoError):
    """A dataset cannot be loaded (missing folder, empty class...). Exit code 2."""

    exit_code = 2


class ModelError(HpoError):
    """A model cannot be built (unknown name, weights unavailable). Exit code 2."""

    exit_code = 2


class StorageUnavailable(HpoError):
    """The storage (a database server, or the ``hpo storage-proxy`` of a ``grpc://`` URL)
    stayed unreachable longer than ``workers.outage_limit_s``, or did not answer at start. Exit code 75 (EX_TEMPFAIL): nothing is wrong with the
    configuration, a restart policy should try again later; a running trial is left for retry
    (:mod:`hpo.storage_retry`)."""

    exit_code = 75
