"""How many CPU threads torch may use in a training process that shares its machine.

torch starts with one thread per core. Two hpo processes (or any other CPU job) on the same cores
then oversubscribe them: epochs ran 12x slower on a 2-core machine. The setting, first given wins:

1. ``--threads N`` (``hpo study``, ``hpo worker``);
2. the environment variable ``HPO_THREADS``;
3. ``workers.threads`` in the study file;
4. unset (``auto``): the cores this process may run on, divided by the hpo processes training on
   this machine now. Each training process registers itself while it runs (a pid file under
   :func:`registry_dir`), and the share is recomputed before every trial, so two workers started
   together take half the cores each, and the one left alone takes them all again.

    >>> import tempfile
    >>> from pathlib import Path
    >>> budget = ThreadBudget(None, registry=Path(tempfile.mkdtemp()), cores=4)
    >>> with budget:
    ...     budget.threads(), budget.describe()
    (4, 'torch threads: 4 (auto: 4 cores, 1 hpo process training on this machine)')
    >>> ThreadBudget(2).describe()
    'torch threads: 2 (set)'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Self

from hpo.errors import ConfigError

ENV = "HPO_THREADS"


def registry_dir() -> Path:
    """The folder where training processes of this user register (one pid file each)."""
    return Path(tempfile.gettempdir()) / f"hpo-{os.getuid()}" / "training"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0))


def setting(cli: int | None, study_file: int | None) -> int | None:
    """The thread count asked for (``--threads``, then ``$HPO_THREADS``, then the study file);
    ``None`` for auto. A bad ``$HPO_THREADS`` is a ConfigError (exit 2)."""
    if cli is not None:
        return cli
    raw = os.environ.get(ENV, "").strip()
    if raw and raw != "auto":
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"${ENV}", ENV, raw, "an integer >= 1, or auto")
        return int(raw)
    return study_file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with the same pid: alive
        return True
    return True


class ThreadBudget:
    """Registers this process as training while in a ``with`` block; :meth:`apply` sets torch's
    thread count to the fixed setting, or to this process's share of the cores."""

    def __init__(self, fixed: int | None, registry: Path | None = None,
                 cores: int | None = None) -> None:
        self.fixed = fixed
        self.registry = registry or registry_dir()
        self.cores = cores or available_cores()
        self._mine = self.registry / str(os.getpid())
        self._applied: int | None = None
        self.said = ""  # the line describing the count last applied

    def __enter__(self) -> Self:
        if self.fixed is None:
            self.registry.mkdir(parents=True, exist_ok=True)
            self._mine.write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._mine.unlink(missing_ok=True)

    def training_processes(self) -> int:
        """Live registered hpo training processes (this one included); stale files removed."""
        count = 0
        for entry in self.registry.glob("*") if self.registry.is_dir() else ():
            if entry.name.isdigit() and _alive(int(entry.name)):
                count += 1
            else:
                entry.unlink(missing_ok=True)
        return max(count, 1)

    def threads(self, processes: int | None = None) -> int:
        """The thread count for the next trial (``processes``: as counted, else counted now)."""
        if self.fixed is not None:
            return self.fixed
        return max(1, self.cores // (processes or self.training_processes()))

    def describe(self, processes: int | None = None) -> str:
        """One line for the terminal: the count and where it comes from."""
        if self.fixed is not None:
            return f"torch threads: {self.fixed} (set)"
        n = processes or self.training_processes()
        return (f"torch threads: {self.threads(n)} (auto: {self.cores} cores, {n} hpo "
                f"process{'es' if n > 1 else ''} training on this machine)")

    def apply(self) -> str | None:
        """Set torch's thread count for this (the training) thread; the line to print when it
        changed since the last call, else None."""
        import torch  # only processes that train call this

        processes = None if self.fixed is not None else self.training_processes()
        n = self.threads(processes)
        if n == self._applied:
            return None
        torch.set_num_threads(n)
        first, self._applied = self._applied is None, n
        self.said = self.describe(processes)
        return None if first else self.said
