"""After `hpo migrate` the source is marked as moved: `hpo study`/`hpo worker` there refuse
(exit 2) unless `--force`; the migrate output says exactly what changed in the source; MySQL's
whole-second trial times pass the copy's check (and a real difference does not)."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from optuna.trial import TrialState
from resume_support import PASSWORD, drop_storage, load, make_project, make_storage

from hpo.config import load_study
from hpo.migrate import MigrationError, _verify, moved_to, same_time
from hpo.redaction import redact
from hpo.runner import open_study
from hpo.storage import open_storage, resolve_storage_url

DIST = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}


def _source(tmp_path):
    """A SQLite study (budget 4 trials of 1 epoch) with 3 finished trials, whose times have
    fractions of a second, and 1 trial left RUNNING by a worker that died long ago."""
    project = make_project(tmp_path / "p", n_trials=4, max_epochs=1)
    db = tmp_path / "p" / "small.db"
    url = f"sqlite:///{db}"
    study = open_study(load_study(str(project / "studies" / "rt.yaml")), url)
    for i in range(3):
        trial = study.ask(DIST)
        trial.report(0.5 + i / 10, 1)
        study.tell(trial, 0.5 + i / 10)
    dead = study.ask(DIST)
    study._storage.record_heartbeat(dead._trial_id)
    with sqlite3.connect(db) as conn:  # its last heartbeat is old: the worker is dead
        conn.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000'")
    return project, url, dead.number


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_migrated_source_refuses_to_run_without_force(kind, tmp_path, hpo_cli):
    project, src_url, dead = _source(tmp_path)
    dst_url = make_storage(kind, tmp_path)
    try:
        moved = hpo_cli("migrate", "rt", "--from", src_url, "--to", dst_url, cwd=project)
        out = moved.stdout + moved.stderr
        assert moved.returncode == 0, out
        assert "copied study 'rt': 5 trials" in out  # 3 complete, the dead one, its retry
        # exactly what changed in the source, and no "the source is untouched"
        assert (f"source: 1 stale trial ({dead}) failed and queued for retry; marked as moved"
                in moved.stdout), out
        assert "untouched" not in out and PASSWORD not in out
        src = load(src_url)
        marker = moved_to(src)
        assert marker["url"] == redact(resolve_storage_url(dst_url))
        assert PASSWORD not in str(marker)
        assert [t.state for t in src.get_trials(deepcopy=False)][3:] == \
            [TrialState.FAIL, TrialState.WAITING]
        assert moved_to(load(dst_url)) is None  # the copy runs as usual

        # trial times: the source keeps microseconds; MySQL keeps whole seconds, and the check
        # compared them at that precision (so the copy verified)
        dst = load(dst_url)
        a, b = src.get_trials(deepcopy=False), dst.get_trials(deepcopy=False)
        assert any(t.datetime_start.microsecond for t in a if t.datetime_start)
        whole = kind == "mysql"
        assert all(same_time(s.datetime_start, d.datetime_start, whole)
                   and same_time(s.datetime_complete, d.datetime_complete, whole)
                   for s, d in zip(a, b))
        if whole:
            assert all(t.datetime_start.microsecond == 0 for t in b if t.datetime_start)
            _check_catches_a_real_difference(src, dst_url)

        # the source refuses to run: `hpo study` and `hpo worker`, exit 2 and the message
        text = (f"study 'rt' was moved to {marker['url']} on {marker['at']}; run it there, "
                "or pass --force to continue this copy")
        for command in (["study", "rt"], ["worker", "rt"]):
            refused = hpo_cli(*command, "--storage", src_url, "--no-progress", cwd=project)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"hpo: error: {text}" in refused.stderr
        assert len(load(src_url).get_trials(deepcopy=False)) == 5  # nothing ran

        # --force continues this copy (with a warning): the queued retry runs, 1 epoch
        forced = hpo_cli("study", "rt", "--storage", src_url, "--no-progress", "--force",
                         cwd=project)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "continuing this copy (--force)" in forced.stderr
        states = [t.state for t in load(src_url).get_trials(deepcopy=False)]
        assert states.count(TrialState.COMPLETE) == 4 and TrialState.WAITING not in states
        assert len(load(dst_url).get_trials(deepcopy=False)) == 5  # the copy is untouched
    finally:
        drop_storage(dst_url)


def _check_catches_a_real_difference(src: optuna.Study, dst_url: str) -> None:
    """The time check is no blanket pass: the copy verifies at whole seconds but not at full
    precision, and a copy 5 s off fails naming the trial."""
    import pymysql

    dst_storage = open_storage(resolve_storage_url(dst_url))
    dst = optuna.load_study(study_name="rt", storage=dst_storage)
    src_storage = src._storage
    ids = {s._trial_id: d._trial_id for s, d in zip(src.get_trials(), dst.get_trials())}
    with pytest.raises(MigrationError, match="datetime_"):  # full precision: it differs
        _verify(src, dst, src_storage, dst_storage, ids, whole_seconds=False)
    _verify(src, dst, src_storage, dst_storage, ids, whole_seconds=True)  # what migrate did
    dst_storage.engine.dispose()

    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True,
                           database=dst_url.rsplit("/", 1)[-1])
    conn.cursor().execute("UPDATE trials SET datetime_start = datetime_start + INTERVAL 5 SECOND "
                          "WHERE number = 1")
    conn.close()
    dst_storage = open_storage(resolve_storage_url(dst_url))
    dst = optuna.load_study(study_name="rt", storage=dst_storage)
    with pytest.raises(MigrationError, match="the copy of trial 1 has datetime_start"):
        _verify(src, dst, src_storage, dst_storage, ids, whole_seconds=True)
    dst_storage.engine.dispose()
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", autocommit=True,
                           database=dst_url.rsplit("/", 1)[-1])
    conn.cursor().execute("UPDATE trials SET datetime_start = datetime_start - INTERVAL 5 SECOND "
                          "WHERE number = 1")
    conn.close()


@pytest.mark.timeout(300)
def test_a_failed_copy_says_what_changed_in_the_source(tmp_path, hpo_cli):
    """Stale trials are failed before the copy; when the copy then fails (a real failure:
    MariaDB's TEXT column holds 64 KiB, SQLite took a bigger study attr) the message says so,
    not "the source is untouched", and the source is not marked as moved."""
    project, src_url, dead = _source(tmp_path)
    load(src_url).set_user_attr("analyses_archive", ["x" * 1000] * 80)  # ~82 kB
    dst_url = make_storage("mysql", tmp_path)
    try:
        result = hpo_cli("migrate", "rt", "--from", src_url, "--to", dst_url, cwd=project)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "the partial copy was deleted" in result.stderr
        assert (f"source: 1 stale trial ({dead}) failed and queued for retry; not marked as "
                "moved") in result.stderr, result.stderr
        assert "untouched" not in result.stderr
        src = load(src_url)
        assert moved_to(src) is None
        assert [t.state for t in src.get_trials(deepcopy=False)][3:] == \
            [TrialState.FAIL, TrialState.WAITING]
    finally:
        drop_storage(dst_url)


def test_the_moved_marker_is_not_copied_along(tmp_path):
    """Migrating a moved source again (say to a second server) gives a copy that runs: the
    marker belongs to the source it was set on."""
    _project, src_url, _ = _source(tmp_path)
    from hpo.migrate import migrate_study

    first = migrate_study("rt", src_url, f"sqlite:///{tmp_path / 'one.db'}")
    assert "marked as moved" in first.splitlines()[1]
    second = migrate_study("rt", src_url, f"sqlite:///{tmp_path / 'two.db'}")
    assert second.splitlines()[1].startswith("source: marked as moved")  # nothing else changed
    assert moved_to(load(f"sqlite:///{tmp_path / 'two.db'}")) is None
    assert moved_to(load(src_url))["url"] == f"sqlite:///{tmp_path / 'two.db'}"  # the last move
