"""Where analyses live: one JSON value per analysis in the study's system attrs.

System attrs are plain rows in Optuna's RDB schema, so this works the same on SQLite,
PostgreSQL and MySQL, and ``optuna.copy_study`` carries them to another storage. Each value
stays small (an analysis is a few kB; MySQL's TEXT holds 64 kB).

Keys: ``hpo:analysis:<id>`` (see :mod:`hpo.sampler.analysis` for the format) and
``hpo:claim:<id>`` (which worker took a round, and when; a lost race only means a duplicate
analysis, which is harmless because proposals are deduplicated). A claim with no analysis
expires, so a round lost in a crash is redone: after ``timeout`` seconds, or at once when the
claiming process is known to be gone (same host and its pid is not running, or this very
host:pid in a later process), or when it was released as ``abandoned`` (:func:`release`: the
run stopped waiting for the round's analyst).

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

from hpo.optuna_private import set_study_system_attr, study_system_attrs
from hpo.record import ANALYSIS_PREFIX, CLAIM_PREFIX, stored_analyses, write_analysis


def system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study_system_attrs(study)


def set_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    set_study_system_attr(study, key, value)


def save_analysis(study: optuna.Study, analysis: dict[str, Any]) -> None:
    """Store (or replace) one analysis (:func:`hpo.record.write_analysis`)."""
    write_analysis(study, analysis)


def load_analyses(study: optuna.Study) -> list[dict[str, Any]]:
    """Every stored analysis as its JSON, oldest first (:func:`hpo.record.stored_analyses`)."""
    return stored_analyses(system_attrs(study))


CLAIM_TIMEOUT = 1800.0  # seconds after which a claim with no stored analysis may be retaken
_MINE: set[tuple[str, str]] = set()  # (analysis id, claim time) of claims this process wrote


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, it is someone else's
        return True
    return True


def claim_expired(analysis_id: str, held: dict[str, Any],
                  timeout: float = CLAIM_TIMEOUT) -> bool:
    """Whether a claim (with no analysis stored) no longer holds its round."""
    if held.get("abandoned"):  # the run that held it stopped waiting for it (see release)
        return True
    try:
        at = datetime.fromisoformat(held["at"])
    except (KeyError, TypeError, ValueError):
        return True
    if (datetime.now(UTC) - at).total_seconds() > timeout:
        return True
    host, _, pid = str(held.get("worker", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: only the timeout tells
    if int(pid) == os.getpid():  # this host:pid, but not this process's claim: a restart
        return (analysis_id, str(held.get("at"))) not in _MINE
    return not _alive(int(pid))


def taken(study: optuna.Study, timeout: float = CLAIM_TIMEOUT) -> set[str]:
    """Ids of the rounds that are done (analysis stored) or held by a live claim."""
    attrs = system_attrs(study)
    done = {k[len(ANALYSIS_PREFIX):] for k in attrs if k.startswith(ANALYSIS_PREFIX)}
    held = {k[len(CLAIM_PREFIX):] for k, v in attrs.items() if k.startswith(CLAIM_PREFIX)
            and k[len(CLAIM_PREFIX):] not in done
            and not claim_expired(k[len(CLAIM_PREFIX):], v, timeout)}
    return done | held


def claim(study: optuna.Study, analysis_id: str, timeout: float = CLAIM_TIMEOUT) -> bool:
    """Take the round ``analysis_id`` for this worker; False when it is done or another worker
    holds it (a claim older than ``timeout`` seconds with no analysis does not hold it)."""
    attrs = system_attrs(study)
    key = CLAIM_PREFIX + analysis_id
    if (ANALYSIS_PREFIX + analysis_id) in attrs:
        return False
    held = attrs.get(key)
    if held is not None and not claim_expired(analysis_id, held, timeout):
        return False
    me = worker_id()
    value = {"worker": me, "at": datetime.now(UTC).isoformat()}
    if held is not None:
        value["retaken_from"] = held
    set_system_attr(study, key, value)
    if system_attrs(study).get(key, {}).get("worker") != me:
        return False
    _MINE.add((analysis_id, value["at"]))
    return True


def release(study: optuna.Study, analysis_id: str, reason: str) -> None:
    """Give up this worker's claim on a round that will not be stored (the run stopped waiting
    for its analyst): the claim stays as a record, marked ``abandoned`` with ``reason``, and any
    worker may redo the round at once."""
    key = CLAIM_PREFIX + analysis_id
    attrs = system_attrs(study)
    held = attrs.get(key)
    if (ANALYSIS_PREFIX + analysis_id) in attrs or not isinstance(held, dict) \
            or held.get("worker") != worker_id():
        return
    set_system_attr(study, key, {**held, "abandoned": reason,
                                 "abandoned_at": datetime.now(UTC).isoformat()})
