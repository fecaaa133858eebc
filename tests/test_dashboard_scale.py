"""``hpo dashboard`` at scale and as a viewer: its start reads no trial, it names the objective,
it lists only checkpoints that are there, and ``--read-only`` refuses every change.

Real SQLite storages and the real optuna-dashboard server (``hpo.dashboard.start``), real HTTP.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

import optuna
import pytest
import sqlalchemy
from report_studies import make_study

from hpo.dashboard import free_port, publish_notes, start, wait_until_up
from hpo.storage import open_storage


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    """Status and body of one real HTTP request (an error status is returned, not raised)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Server:
    """``hpo dashboard`` started on ``url`` in a child process, stopped on exit."""

    def __init__(self, url: str, artifacts: Path, read_only: bool = False) -> None:
        self.port = free_port()
        self.proc = start(url, port=self.port, artifacts=str(artifacts), read_only=read_only,
                          echo=lambda _: None)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        wait_until_up(self.port, proc=self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _checkpointed_study(url: str, folder: Path) -> optuna.Study:
    """Five trials, each saving two checkpoints (the second replaces the first) with hpo's
    :class:`~hpo.checkpoint.Checkpoints`, then retention keeping the best two."""
    from hpo.checkpoint import Checkpoints, open_artifact_store
    from hpo.config import CheckpointConfig

    study = optuna.create_study(study_name="kept", storage=url, direction="maximize")
    ckpt = Checkpoints(open_artifact_store(str(folder)), str(folder),
                       CheckpointConfig(every_n_epochs=1, keep_best_k=2))
    for i in range(5):
        trial = study.ask()
        for epoch in (1, 2):
            ckpt.save(trial, {"epoch": epoch, "params": {}})
        study.tell(trial, i / 10)
    ckpt.prune(study, fail_grace_s=0)
    return study


def test_dashboard_lists_only_checkpoints_that_are_there(tmp_path: Path) -> None:
    """17 of 20 listed checkpoints answered HTTP 500 once retention had removed them: every
    artifact the dashboard lists now downloads, and the kept ones are listed."""
    url = f"sqlite:///{tmp_path}/hpo.db"
    study = _checkpointed_study(url, tmp_path / "artifacts")
    kept = {t.user_attrs["checkpoint"]["artifact_id"] for t in study.trials if t.number >= 3}
    with _Server(url, tmp_path / "artifacts") as server:
        status, body = _http("GET", f"{server.base}/api/studies/{study._study_id}")
        assert status == 200
        detail = json.loads(body)
        listed = [(t["trial_id"], a["artifact_id"]) for t in detail["trials"]
                  for a in t["artifacts"]]
        assert {a for _, a in listed} == kept  # 10 uploaded, 8 removed
        for trial_id, artifact_id in listed:
            link = f"{server.base}/artifacts/{study._study_id}/{trial_id}/{artifact_id}"
            assert _http("GET", link)[0] == 200, link
        best = detail["best_trials"][0]["artifacts"]
        assert [a["artifact_id"] for a in best] == [study.best_trial.user_attrs[
            "checkpoint"]["artifact_id"]]


def test_dashboard_names_the_objective(tmp_path: Path) -> None:
    """No "Objective 0": ``hpo dashboard`` names an existing hpo study's objective after its
    config's metric, and a study hpo creates is named at once."""
    from report_studies import study_config

    from hpo.runner import open_study

    url = f"sqlite:///{tmp_path}/hpo.db"
    old = make_study(url, "old", n_trials=3)
    assert old.metric_names is None  # stored before hpo named objectives
    with _Server(url, tmp_path / "artifacts") as server:
        status, body = _http("GET", f"{server.base}/api/studies/{old._study_id}")
        assert status == 200 and json.loads(body)["objective_names"] == ["val_accuracy"]
    assert open_study(study_config("new"), url).metric_names == ["val_accuracy"]


def test_read_only_refuses_every_change_and_still_shows(tmp_path: Path) -> None:
    """``--read-only``: delete, rename, note edits and user attrs answer 403 and change nothing;
    the study, its trials and its note still show; nothing is written before the server starts."""
    from optuna_dashboard import get_note

    url = f"sqlite:///{tmp_path}/hpo.db"
    study = make_study(url, "viewed", n_trials=6, analysis_after=3)
    sid, tid = study._study_id, study.trials[0]._trial_id
    note = get_note(study)
    with _Server(url, tmp_path / "artifacts", read_only=True) as server:
        api = f"{server.base}/api"
        refused = [("DELETE", f"{api}/studies/{sid}", {}),
                   ("POST", f"{api}/studies/{sid}/rename", {"study_name": "renamed"}),
                   ("POST", f"{api}/studies", {"study_name": "new", "directions": ["minimize"]}),
                   ("PUT", f"{api}/studies/{sid}/note", {"version": 99, "body": "defaced"}),
                   ("PUT", f"{api}/studies/{sid}/{tid}/note", {"version": 1, "body": "x"}),
                   ("POST", f"{api}/trials/{tid}/user-attrs", {"user_attrs": {"x": 1}})]
        for method, link, body in refused:
            assert _http(method, link, body)[0] == 403, (method, link)
        status, body = _http("GET", f"{api}/studies/{sid}")
        assert status == 200 and len(json.loads(body)["trials"]) == len(study.trials)
        assert json.loads(body)["note"]["body"] == note
        assert _http("GET", f"{server.base}/dashboard/studies/{sid}")[0] == 200
        assert _http("GET", f"{server.base}/csv/{sid}")[0] == 200
    after = optuna.load_study(study_name="viewed", storage=url)
    assert optuna.get_all_study_names(url) == ["viewed"]
    assert get_note(after) == note and after.trials[0].user_attrs == study.trials[0].user_attrs
    assert after.metric_names is None  # read-only: not even the objective's name is written


def _with_trial_numbers(study: optuna.Study) -> None:
    """Record each proposal's trial number in its stored analysis, as the sampler does
    (``make_study`` leaves one out, as studies stored before it did: those read the trials)."""
    from hpo.optuna_private import set_study_system_attr, study_system_attrs
    from hpo.record import ANALYSIS_ATTR, ANALYSIS_PREFIX, PROPOSAL_ATTR

    ran = {(t.user_attrs[ANALYSIS_ATTR], t.user_attrs[PROPOSAL_ATTR]): t.number
           for t in study.trials if ANALYSIS_ATTR in t.user_attrs}
    for key, raw in study_system_attrs(study).items():
        if key.startswith(ANALYSIS_PREFIX):
            for i, proposal in enumerate(raw["proposals"]):
                proposal["trial_number"] = ran[(raw["id"], i)]
            set_study_system_attr(study, key, raw)


@pytest.mark.parametrize("n_trials", [8, 24])
def test_publish_with_nothing_to_write_reads_no_trial(tmp_path: Path, n_trials: int) -> None:
    """``publish_notes`` with its notes in place (every ``hpo dashboard`` start after the first)
    reads the study's system attrs a fixed number of times and no trial: 397 ``get_note`` calls
    each reading ~1,700 attrs took 54.8 s at 10,000 trials."""
    url = f"sqlite:///{tmp_path}/hpo.db"
    _with_trial_numbers(make_study(url, "s", n_trials=n_trials, analysis_after=5))
    storage = open_storage(url)
    study = optuna.load_study(study_name="s", storage=storage)
    assert publish_notes(study) == 1  # writes the notes
    statements: list[str] = []
    sqlalchemy.event.listen(storage.engine, "before_cursor_execute",
                            lambda _c, _cur, sql, *_: statements.append(sql))
    assert publish_notes(study) == 1  # nothing left to write
    assert not [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert sum("FROM study_system_attributes" in s for s in statements) <= 2
    assert not [s for s in statements if "FROM trials " in s and "trials.number =" not in s]
    assert not [s for s in statements if "trial_user_attributes" in s]


def _view(app: Any, study_id: int) -> dict[str, Any]:
    """optuna-dashboard's answer to its study view (``GET /api/studies/<id>?after=0``)."""
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=f"/api/studies/{study_id}", QUERY_STRING="after=0")
    return json.loads(b"".join(app(environ, lambda *_: None)))


def order_free(value: Any) -> Any:
    """A dashboard answer with the orders that carry no meaning made canonical: lists of
    named entries (params, attrs, search-space entries) by name or key, a categorical's
    choices by value. Optuna's reader gives a trial's attrs in the database's order, hpo's in
    the order written, the gRPC proxy its params in its own; optuna-dashboard merges choices
    through a Python set."""
    if isinstance(value, dict):
        return {k: order_free(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [order_free(v) for v in value]
        for field in ("name", "key", "value"):
            if items and all(isinstance(v, dict) and field in v and "number" not in v
                             for v in items):
                return sorted(items, key=lambda v: str(v[field]))
        return items
    return value


def test_warmed_up_view_is_optuna_dashboards_own(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """hpo's dashboard (Core trial reads, its serializer and search-space cache sped up, every
    study viewed once at start) answers a study view exactly as optuna-dashboard alone does
    on Optuna's storage, and after the warm-up a view builds no finished trial again."""
    from optuna_dashboard import _app, _inmemory_cache, _serializer, wsgi

    from hpo import dashboard
    from hpo.optuna_private import speed_up_dashboard
    from hpo.rdb_reader import FastReadRDBStorage

    url = f"sqlite:///{tmp_path}/hpo.db"
    study = make_study(url, "s", n_trials=24, analysis_after=5)
    running = study.ask()
    running.suggest_float("lr", 1e-4, 1e-1, log=True)
    sid = optuna.storages.RDBStorage(url).get_study_id_from_name("s")
    plain = _view(wsgi(optuna.storages.RDBStorage(url)), sid)

    for module, name in ((_serializer, "serialize_frozen_trial"),
                         (_serializer, "serialize_distribution"), (_serializer, "np"),
                         (_app, "serialize_study_detail"),
                         (_inmemory_cache._CachedExtraStudyProperty, "update"),
                         (_inmemory_cache._CachedExtraStudyProperty, "_update_search_space")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    speed_up_dashboard()
    storage = dashboard._dashboard_storage(url)
    app = wsgi(storage)
    built: list[int] = []
    frozen = FastReadRDBStorage._frozen
    monkeypatch.setattr(FastReadRDBStorage, "_frozen",
                        lambda self, row, *a: (built.append(row[1]), frozen(self, row, *a))[1])
    dashboard.warm_up(app, storage)
    assert sorted(built) == list(range(25))  # every trial read once
    built.clear()
    app._inmemory_cache._trials_last_fetched_at.clear()  # past optuna-dashboard's 2 s reuse
    assert order_free(_view(app, sid)) == order_free(plain)
    assert built == [running.number]  # only the running trial is read again

