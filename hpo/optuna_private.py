"""The only place hpo touches Optuna's private API (names with a leading underscore).

hpo needs a few things Optuna keeps private: a study's storage and id (to read and write study
system attrs, and trial attrs of a trial that is not running here), a trial's storage id, the
heartbeat interface a storage implements (and the heartbeats an RDB storage recorded), the
frozen study a storage returns, the cache Optuna puts around an RDB storage, the servicer of its
gRPC storage proxy, the tables of an RDB storage, optuna-dashboard's reader of a note from study
system attrs already read, and the internals of its study view (:func:`speed_up_dashboard`).
Every such use goes through this module, and
``tests/test_optuna_private.py`` pins what it relies on, so an Optuna upgrade that moves one
fails there, by name and with the Optuna version, before it fails anywhere else.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> set_study_system_attr(study, "hpo:example", {"n": 1})
    >>> study_system_attrs(study)
    {'hpo:example': {'n': 1}}
    >>> trial = study.ask()
    >>> storage_of(study).get_trial(trial_id_of(trial)).number, study_id_of(study) >= 0
    (0, True)
    >>> isinstance(storage_of(study), BaseHeartbeat)  # in-memory storage has no heartbeats
    False
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages import _CachedStorage as CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial

__all__ = [
    "BaseHeartbeat",
    "CachedStorage",
    "FrozenStudy",
    "StudyDirection",
    "add_storage_proxy_service",
    "cached_backend",
    "dashboard_notes",
    "heartbeat_ages",
    "note_target",
    "rdb_models",
    "set_study_system_attr",
    "speed_up_dashboard",
    "stale_trial_ids",
    "storage_of",
    "study_id_of",
    "study_system_attrs",
    "trial_id_of",
    "wrap_grpc_stub",
]


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` reads and writes through (``study._storage``)."""
    return study._storage


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of ``study`` (``study._study_id``)."""
    return study._study_id


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial, running (``optuna.Trial``) or frozen (``trial._trial_id``);
    not its number."""
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attrs (``optuna.Study`` has no reader for them)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Write one study system attr (``optuna.Study`` has no setter for them)."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def stale_trial_ids(storage: BaseHeartbeat, study_id: int) -> list[int]:
    """Ids of the study's RUNNING trials whose heartbeat stopped (``_get_stale_trial_ids``)."""
    return storage._get_stale_trial_ids(study_id)


def heartbeat_ages(storage: Any, study_id: int) -> dict[int, float]:
    """Seconds since the last heartbeat Optuna recorded of each RUNNING trial of the study, by
    trial id, measured by the database's clock (``TrialHeartbeatModel``, as
    ``RDBStorage._get_stale_trial_ids`` reads it); {} for a storage that is not an RDB one."""
    import sqlalchemy
    from optuna.storages._rdb import models

    rdb = cached_backend(getattr(storage, "_rdb", storage))
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return {}
    session = rdb.scoped_session()
    try:
        now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
        rows = (session.query(models.TrialHeartbeatModel.trial_id,
                              models.TrialHeartbeatModel.heartbeat)
                .join(models.TrialModel,
                      models.TrialModel.trial_id == models.TrialHeartbeatModel.trial_id)
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state == optuna.trial.TrialState.RUNNING).all())
    finally:
        session.close()
    return {trial_id: max((now - beat.replace(tzinfo=None)) / timedelta(seconds=1), 0.0)
            for trial_id, beat in rows}


def add_storage_proxy_service(server: Any, storage: Any) -> None:
    """Serve ``storage`` on the grpc ``server`` as Optuna's gRPC storage proxy does
    (``optuna.storages.run_grpc_proxy_server``, which builds its own server: hpo needs one that
    refuses a port already taken, and stops on SIGTERM)."""
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)


def wrap_grpc_stub(proxy: Any, wrap: Any) -> None:
    """Put ``wrap(stub)`` in place of the gRPC stub an ``optuna.storages.GrpcStorageProxy``
    calls (``proxy._stub``, and its trial cache's ``_cache.grpc_client``)."""
    proxy._stub = wrap(proxy._stub)
    proxy._cache.grpc_client = proxy._stub


def rdb_models() -> Any:
    """Optuna's SQLAlchemy models of an RDB storage's tables (``optuna.storages._rdb.models``):
    :mod:`hpo.rdb_reader` reads trials from those tables."""
    from optuna.storages._rdb import models

    return models


def cached_backend(storage: Any) -> Any:
    """The RDB storage behind Optuna's trial cache (``_CachedStorage._backend``), which
    ``optuna.load_study(storage=URL)`` puts around it; any other storage as it is."""
    return getattr(storage, "_backend", storage)


def note_target(study: optuna.Study, trial: FrozenTrial) -> Any:
    """What optuna-dashboard's ``save_note``/``get_note`` take for a trial (they read
    ``.storage``, ``.study`` and ``._trial_id``), built from a frozen trial: a waiting trial
    has no ``optuna.Trial`` yet."""
    return SimpleNamespace(storage=storage_of(study), study=study, _trial_id=trial_id_of(trial))



def dashboard_notes(system_attrs: dict[str, Any]) -> dict[int | None, str]:
    """Every optuna-dashboard note in a study's system attrs already read, by trial id (None:
    the study's own), in one pass over them (``optuna_dashboard.get_note`` reads them all per
    note, and its reader scans them all per note: 600 proposal notes at 10,000 trials made that
    quadratic). Notes live under ``dashboard:<trial id>:`` (a trial's) or ``dashboard:``."""
    from optuna_dashboard._note import get_note_from_system_attrs

    groups: dict[int | None, dict[str, Any]] = {}
    for key, value in system_attrs.items():
        if key.startswith("dashboard:"):
            part = key.split(":")[1]
            groups.setdefault(int(part) if part.isdigit() else None, {})[key] = value
    return {trial_id: get_note_from_system_attrs(attrs, trial_id)["body"]
            for trial_id, attrs in groups.items()}


def _attrs_by_trial(system_attrs: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """A study's system attrs that belong to one trial, by trial id: its note
    (``dashboard:<id>:...``) and artifacts uploaded through optuna-dashboard
    (``dashboard:artifacts:<id>:...``)."""
    index: dict[int, dict[str, Any]] = {}
    for key, value in system_attrs.items():
        parts = key.split(":", 3)
        if parts[0] != "dashboard" or len(parts) < 3:
            continue
        owner = parts[2] if parts[1] == "artifacts" else parts[1]
        if owner.isdigit():
            index.setdefault(int(owner), {})[key] = value
    return index


def speed_up_dashboard() -> None:
    """Make optuna-dashboard's view of a big study cheap, with the same answers (each piece is
    compared with optuna-dashboard's own in ``tests/test_optuna_private.py``):

    * its trial serializer (``_serializer.serialize_frozen_trial``) reads the study system attrs
      of that trial only: it scans every one twice per trial (note, artifacts), 12 million
      checks per view of a 10,000-trial study with 600 trial notes. The index is built once per
      study read;
    * a finished trial is serialized once: the answer is kept while the storage hands out the
      same trial object (Optuna's trial cache does) with the same note and artifacts;
    * one study is serialized by one request at a time (``_app.serialize_study_detail``): a
      second request for it waits and then finds every finished trial serialized, instead of
      doing the same work beside the first under the GIL;
    * nan and inf are told apart with :mod:`math` instead of numpy (:data:`FLOAT_CHECKS`);
    * a distribution is serialized once (``_serializer.serialize_distribution``; hpo's
      storage hands every trial with the same distribution the same object);
    * its search-space cache (``_inmemory_cache._CachedExtraStudyProperty.update``) moves past
      finished trials: optuna-dashboard's keeps its cursor at -1 when no trial is running and
      walks every trial on every request (2 s at 10,000 trials). And a trial whose
      distributions are the very objects of one walked before is not walked (its union and
      intersection with the space change nothing): both skip only work that changes nothing.
    """
    from optuna_dashboard import _app, _inmemory_cache, _serializer

    serialize = _serializer.serialize_frozen_trial
    if getattr(serialize, "hpo_fast", False):
        return
    _serializer.serialize_distribution = _once_per_object(_serializer.serialize_distribution)
    _serializer.np = FLOAT_CHECKS  # its only use of numpy: nan/inf tests of one float
    seen = threading.local()  # the server is threaded: one index per request
    done: dict[int, tuple[FrozenTrial, dict[str, Any], Any]] = {}  # trial id -> its answer

    def by_trial(study_id: int, trial: FrozenTrial, study_system_attrs: dict[str, Any]) -> Any:
        if getattr(seen, "attrs", None) is not study_system_attrs:
            seen.attrs, seen.index = study_system_attrs, _attrs_by_trial(study_system_attrs)
        own = seen.index.get(trial._trial_id, {})
        kept = done.get(trial._trial_id)
        if kept is not None and kept[0] is trial and kept[1] == own:
            return kept[2]
        answer = serialize(study_id, trial, own)
        if trial.state.is_finished():
            done[trial._trial_id] = (trial, own, answer)
        return answer

    by_trial.hpo_fast = True  # type: ignore[attr-defined]
    _serializer.serialize_frozen_trial = by_trial

    detail = _app.serialize_study_detail
    locks: dict[int, threading.Lock] = {}
    locks_lock = threading.Lock()

    def one_at_a_time(study: FrozenStudy, *args: Any, **kwargs: Any) -> Any:
        with locks_lock:
            lock = locks.setdefault(study._study_id, threading.Lock())
        with lock:
            return detail(study, *args, **kwargs)

    _app.serialize_study_detail = one_at_a_time

    update = _inmemory_cache._CachedExtraStudyProperty.update

    def update_past_finished(self: Any, trials: list[FrozenTrial]) -> None:
        update(self, trials)
        if trials and self._cursor < trials[-1].number and all(
                t.state.is_finished() for t in trials if t.number >= max(self._cursor, 0)):
            self._cursor = trials[-1].number + 1

    _inmemory_cache._CachedExtraStudyProperty.update = update_past_finished

    walk = _inmemory_cache._CachedExtraStudyProperty._update_search_space

    def walk_new_spaces(self: Any, trial: FrozenTrial) -> None:
        # keyed by object identity; the objects are kept so that no id is reused
        walked = self.__dict__.setdefault("hpo_walked", {})
        key = tuple((name, id(d)) for name, d in trial.distributions.items())
        if key not in walked:
            walk(self, trial)
            walked[key] = list(trial.distributions.values())

    _inmemory_cache._CachedExtraStudyProperty._update_search_space = walk_new_spaces


# numpy's isnan/isposinf/isneginf/isfinite for one Python float, without a ufunc call each
# (optuna-dashboard makes four per intermediate value: 0.5 s of a 10,000-trial view)
FLOAT_CHECKS = SimpleNamespace(isnan=math.isnan, isfinite=math.isfinite,
                               isposinf=lambda v: v == math.inf,
                               isneginf=lambda v: v == -math.inf)


def _once_per_object(function: Any) -> Any:
    """``function`` of one argument, its answer kept per argument object (the object is kept
    too, so its id is not reused)."""
    kept: dict[int, tuple[Any, Any]] = {}  # one dict assignment: atomic under the GIL

    def once(obj: Any) -> Any:
        found = kept.get(id(obj))
        if found is None or found[0] is not obj:
            found = kept[id(obj)] = (obj, function(obj))
        return found[1]

    return once
