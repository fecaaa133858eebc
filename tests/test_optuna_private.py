"""What hpo relies on in Optuna's private API (:mod:`hpo.optuna_private`), pinned.

An Optuna upgrade that moves or renames one of these fails here first, by name and with the
installed Optuna version in the message, instead of deep inside a worker or a report. Also
checks that the rest of hpo reaches that API only through hpo.optuna_private, and that
:mod:`hpo.record` stays light (no PyTorch, nothing else of hpo).
"""

from __future__ import annotations

import inspect
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from hpo import optuna_private as private

optuna.logging.set_verbosity(optuna.logging.WARNING)
V = f"(optuna {optuna.__version__})"
HPO = Path(__file__).resolve().parents[1] / "hpo"


def test_study_storage_and_id() -> None:
    study = optuna.create_study()
    assert hasattr(study, "_storage") and hasattr(study, "_study_id"), \
        f"optuna.Study lost _storage/_study_id {V}"
    assert isinstance(private.storage_of(study), BaseStorage), V
    assert isinstance(private.study_id_of(study), int), V
    assert private.storage_of(study).get_study_name_from_id(private.study_id_of(study)) \
        == study.study_name, V


def test_trial_ids_of_running_and_frozen_trials() -> None:
    study = optuna.create_study()
    trial = study.ask()
    assert hasattr(trial, "_trial_id"), f"optuna.Trial lost _trial_id {V}"
    frozen = study.get_trials(deepcopy=False)[0]
    assert hasattr(frozen, "_trial_id"), f"FrozenTrial lost _trial_id {V}"
    assert private.trial_id_of(trial) == private.trial_id_of(frozen), V
    assert private.storage_of(study).get_trial(private.trial_id_of(trial)).number == 0, V


def test_study_system_attrs_round_trip() -> None:
    study = optuna.create_study()
    private.set_study_system_attr(study, "hpo:test", {"a": [1, 2]})
    assert private.study_system_attrs(study) == {"hpo:test": {"a": [1, 2]}}, V


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_heartbeat_base_class(tmp_path: Path) -> None:
    from hpo.storage_retry import RetryingStorage

    assert inspect.isabstract(private.BaseHeartbeat), V
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=60)
    assert isinstance(rdb, private.BaseHeartbeat), f"RDBStorage is no BaseHeartbeat {V}"
    needed = set(private.BaseHeartbeat.__abstractmethods__)
    assert "_get_stale_trial_ids" in needed and "record_heartbeat" in needed, \
        f"BaseHeartbeat's abstract methods changed: {sorted(needed)} {V}"
    missing = [m for m in needed if m not in vars(RetryingStorage)]
    assert not missing, f"RetryingStorage does not implement {missing} of BaseHeartbeat {V}"
    study = optuna.create_study(storage=rdb)
    assert private.stale_trial_ids(rdb, private.study_id_of(study)) == [], V


def test_frozen_study_and_direction(tmp_path: Path) -> None:
    params = list(inspect.signature(private.FrozenStudy).parameters)
    assert params[:5] == ["study_name", "direction", "user_attrs", "system_attrs", "study_id"], \
        f"FrozenStudy takes {params} {V}"
    frozen = private.FrozenStudy(study_name="s", direction=private.StudyDirection.MAXIMIZE,
                                 user_attrs={}, system_attrs={}, study_id=1)
    assert frozen.direction == private.StudyDirection.MAXIMIZE, V
    rdb = RDBStorage(f"sqlite:///{tmp_path / 'fs.db'}")
    optuna.create_study(storage=rdb, study_name="s", direction="maximize")
    [summary] = rdb.get_all_studies()
    assert isinstance(summary, private.FrozenStudy), f"get_all_studies gives {summary!r} {V}"
    assert private.StudyDirection is optuna.study.StudyDirection, V


def test_cached_storage_wraps_rdb(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    rdb = RDBStorage(url)
    cached = private.CachedStorage(rdb)
    assert private.cached_backend(cached) is rdb, f"_CachedStorage lost _backend {V}"
    study = optuna.create_study(storage=url)
    assert isinstance(private.storage_of(study), private.CachedStorage), \
        f"create_study(storage=URL) no longer wraps it in _CachedStorage {V}"
    assert private.cached_backend(rdb) is rdb, V


def test_note_target_for_a_waiting_trial() -> None:
    from optuna_dashboard import get_note, save_note

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    [waiting] = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    save_note(private.note_target(study, waiting), "hello")
    assert get_note(private.note_target(study, waiting)) == "hello", \
        f"optuna-dashboard no longer reads .storage/.study/._trial_id {V}"


# outside hpo/optuna_private.py: no study._storage, ._study_id, ._trial_id, ._backend, and no
# import from a private Optuna module (an object's own self._x is its business)
_PRIVATE = re.compile(r"(?<!self)\._(storage|study_id|trial_id|backend)\b"
                      r"|optuna\.\w+\._\w|_CachedStorage")


def test_private_api_only_in_optuna_private() -> None:
    found = []
    for path in sorted(HPO.rglob("*.py")):
        if path.name == "optuna_private.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PRIVATE.search(code):
                found.append(f"{path.relative_to(HPO.parent)}:{n}: {line.strip()}")
    assert not found, "Optuna's private API outside hpo/optuna_private.py:\n" + "\n".join(found)


@pytest.mark.timeout(120)
def test_record_is_light() -> None:
    code = ("import sys, hpo.record; "
            "bad = sorted(m for m in sys.modules if m.startswith('torch') or m.startswith('hpo.') "
            "and m not in ('hpo.record', 'hpo.optuna_private', 'hpo.lazy')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr



def test_dashboard_notes_from_system_attrs() -> None:
    from optuna_dashboard import get_note, save_note

    study = optuna.create_study()
    trials = [study.ask() for _ in range(12)]  # trial ids 1 and 11, 10 and 0: no prefix mix-up
    save_note(study, "study " * 500)  # longer than one system attr: stored in pieces
    for t in trials[1:]:
        save_note(t, f"note of {t.number}")
    notes = private.dashboard_notes(private.study_system_attrs(study))
    assert notes[None] == get_note(study) == "study " * 500, \
        f"optuna_dashboard._note.get_note_from_system_attrs moved or changed {V}"
    assert {i: n for i, n in notes.items() if i is not None} == \
        {private.trial_id_of(t): get_note(t) for t in trials[1:]}, V
    assert private.trial_id_of(trials[0]) not in notes, V


def _undo_speed_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give optuna-dashboard back its own functions after the test."""
    from optuna_dashboard import _app, _inmemory_cache, _serializer

    for name in ("serialize_frozen_trial", "serialize_distribution", "np"):
        monkeypatch.setattr(_serializer, name, getattr(_serializer, name))
    monkeypatch.setattr(_app, "serialize_study_detail", _app.serialize_study_detail)
    monkeypatch.setattr(_inmemory_cache._CachedExtraStudyProperty, "update",
                        _inmemory_cache._CachedExtraStudyProperty.update)


def test_sped_up_trial_serializer_gives_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from optuna_dashboard import _serializer, save_note

    study = optuna.create_study()
    trials = [study.ask() for _ in range(12)]
    for t in trials[1::2]:
        save_note(t, f"note of {t.number}")
    tid = private.trial_id_of(trials[11])
    private.set_study_system_attr(study, f"dashboard:artifacts:{tid}:abc", json.dumps(
        {"artifact_id": "abc", "filename": "a.txt", "mimetype": "text/plain", "encoding": None}))
    for i, t in enumerate(trials[:-1]):
        t.suggest_categorical("act", ["relu", "gelu"])
        t.suggest_float("lr", 1e-4, 1.0, log=True)
        for step, v in enumerate([0.5, math.nan, math.inf, -math.inf][:i % 5]):
            t.report(v, step)
        study.tell(t, [0.5, math.inf, -math.inf][i % 3])
    sid = private.study_id_of(study)

    def views() -> list:
        system, frozen = private.study_system_attrs(study), study.get_trials(deepcopy=False)
        return [_serializer.serialize_frozen_trial(sid, t, system) for t in frozen]

    _undo_speed_up(monkeypatch)
    before = views()  # optuna-dashboard's own
    private.speed_up_dashboard()
    after = views()
    assert after == before, f"optuna-dashboard's trial serializer reads other attrs now {V}"
    assert {v["value"] for t in after for v in t["intermediate_values"]} >= {"nan", "inf"}
    assert after[11]["artifacts"][0]["artifact_id"] == "abc" and after[1]["note"]["body"], V
    again = views()  # finished trials answered from what was kept
    assert again == before and again[1] is after[1] and again[11] is not after[11]
    save_note(trials[1], "a new note")  # a note changed: that trial is serialized again
    changed = views()
    assert changed[1]["note"]["body"] == "a new note" and changed[3] is after[3]


def test_sped_up_search_space_cache_gives_the_same(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from optuna_dashboard._inmemory_cache import _CachedExtraStudyProperty

    from hpo.rdb_reader import FastReadRDBStorage

    original_update = _CachedExtraStudyProperty.update
    original_walk = _CachedExtraStudyProperty._update_search_space

    def space(prop: _CachedExtraStudyProperty) -> tuple:  # categorical choices in set order
        def norm(items: list) -> list:
            return [(n, sorted(map(str, d.choices)) if hasattr(d, "choices") else d)
                    for n, d in items]
        return (norm(prop.intersection_search_space), norm(prop.union_search_space),
                prop.union_user_attrs, prop.has_intermediate_values)

    def fresh(trials: list) -> tuple:  # optuna-dashboard's own, every trial walked
        prop = _CachedExtraStudyProperty()
        monkeypatch.setattr(_CachedExtraStudyProperty, "_update_search_space", original_walk)
        original_update(prop, trials)
        monkeypatch.setattr(_CachedExtraStudyProperty, "_update_search_space", counting)
        return space(prop)

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url)

    def objective(t: optuna.Trial) -> float:
        t.suggest_categorical("act", ["relu", "gelu", "silu"])
        return t.suggest_float("x", 0, 1 + t.number % 3)

    study.optimize(objective, n_trials=9)
    running = study.ask()
    running.suggest_int("n", 1, 3)
    storage = FastReadRDBStorage(url)  # hands trials with equal distributions one object
    sid = storage.get_study_id_from_name(study.study_name)
    _undo_speed_up(monkeypatch)
    private.speed_up_dashboard()
    fast_walk, calls = _CachedExtraStudyProperty._update_search_space, []

    def counting(self: _CachedExtraStudyProperty, trial: optuna.trial.FrozenTrial) -> None:
        calls.append(trial.number)
        fast_walk(self, trial)

    monkeypatch.setattr(_CachedExtraStudyProperty, "_update_search_space", counting)
    kept = _CachedExtraStudyProperty()
    kept.update(storage.get_all_trials(sid, deepcopy=False))
    assert kept._cursor == running.number, V  # stops at the running trial, as before
    assert space(kept) == fresh(storage.get_all_trials(sid, deepcopy=False)), V
    study.tell(running, 0.2)
    study.optimize(lambda t: t.suggest_categorical("c", ["a", "b"]), n_trials=2)
    kept.update(storage.get_all_trials(sid, deepcopy=False))
    assert kept._cursor == len(study.trials), V  # past every finished trial
    assert space(kept) == fresh(storage.get_all_trials(sid, deepcopy=False)), V
    calls.clear()
    kept.update(storage.get_all_trials(sid, deepcopy=False))
    assert calls == [], "finished trials walked again"


def test_heartbeat_ages_and_grpc_proxy_servicer(tmp_path) -> None:
    storage = RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=60)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(private.trial_id_of(trial))
    ages = private.heartbeat_ages(storage, private.study_id_of(study))
    assert list(ages) == [private.trial_id_of(trial)] and 0 <= ages[private.trial_id_of(trial)] < 60, \
        f"Optuna's heartbeat table moved {V}"
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    server = grpc.server(ThreadPoolExecutor(1))
    private.add_storage_proxy_service(server, storage)  # Optuna's servicer and generated stub
    proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=1)  # connects lazily
    seen = []
    private.wrap_grpc_stub(proxy, lambda stub: seen.append(stub) or stub)
    assert seen and seen[0] is not None, f"GrpcStorageProxy lost _stub/_cache.grpc_client {V}"
    proxy.close()


def test_rdb_model_tables_hpo_reads() -> None:
    """hpo.rdb_reader reads these tables and columns (tests/test_rdb_reader.py compares its
    trials with Optuna's)."""
    from hpo.rdb_reader import _child_tables

    m = private.rdb_models()
    assert {"trial_id", "number", "study_id", "state", "datetime_start",
            "datetime_complete"} <= set(m.TrialModel.__table__.c.keys()), V
    for name, (table, columns) in _child_tables(m).items():
        assert {"trial_id", *columns} <= set(table.c.keys()), f"{name}: {table.name} {V}"
    assert callable(m.TrialValueModel.stored_repr_to_value), V
    assert callable(m.TrialIntermediateValueModel.stored_repr_to_intermediate_value), V
