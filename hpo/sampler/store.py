"""Where analyses live: one JSON value per analysis in the study's system attrs.

System attrs are plain rows in Optuna's RDB schema, so this works the same on SQLite,
PostgreSQL and MySQL, and ``optuna.copy_study`` carries them to another storage. Each value
stays small (an analysis is a few kB; MySQL's TEXT holds 64 kB).

Keys: ``hpo:analysis:<id>`` (see :mod:`hpo.sampler.analysis` for the format) and
``hpo:claim:<id>`` (which worker took a round; a lost race only means a duplicate analysis,
which is harmless because proposals are deduplicated).

    >>> import optuna
    >>> study = optuna.create_study()
    >>> save_analysis(study, {"id": "manual-0000", "proposals": []})
    >>> [a["id"] for a in load_analyses(study)]
    ['manual-0000']
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

import optuna

ANALYSIS_PREFIX = "hpo:analysis:"
CLAIM_PREFIX = "hpo:claim:"
_MAX_TEXT = 1500


def system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


def set_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def _trim(x: Any) -> Any:
    if isinstance(x, str):
        return x if len(x) <= _MAX_TEXT else x[: _MAX_TEXT - 3] + "..."
    if isinstance(x, dict):
        return {k: _trim(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_trim(v) for v in x]
    return x


def save_analysis(study: optuna.Study, analysis: dict[str, Any]) -> None:
    """Store (or replace) one analysis."""
    set_system_attr(study, ANALYSIS_PREFIX + analysis["id"], _trim(analysis))


def load_analyses(study: optuna.Study) -> list[dict[str, Any]]:
    """Every stored analysis, oldest first (by creation time, then id)."""
    found = [v for k, v in system_attrs(study).items() if k.startswith(ANALYSIS_PREFIX)]
    return sorted(found, key=lambda a: (a.get("created_at", ""), a.get("id", "")))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(study: optuna.Study, analysis_id: str) -> bool:
    """Take the round ``analysis_id`` for this worker; False when another worker has it."""
    key = CLAIM_PREFIX + analysis_id
    if key in system_attrs(study) or (ANALYSIS_PREFIX + analysis_id) in system_attrs(study):
        return False
    me = worker_id()
    set_system_attr(study, key, {"worker": me, "at": datetime.now(UTC).isoformat()})
    return system_attrs(study).get(key, {}).get("worker") == me
