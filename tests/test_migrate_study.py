"""`hpo migrate` round trip: SQLite -> PostgreSQL / MySQL keeps every trial, attr and note."""

from __future__ import annotations

import os
import signal

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from optuna_dashboard import save_note
from optuna_dashboard._note import get_note_from_system_attrs
from resume_support import (
    PASSWORD,
    drop_storage,
    finish,
    load,
    make_project,
    make_storage,
    running_with_checkpoint,
    spawn,
    wait_for,
)

from hpo.config import load_study
from hpo.errors import ConfigError
from hpo.migrate import MigrationError, migrate_study
from hpo.optuna_private import study_system_attrs
from hpo.record import (
    MOVED_ATTR,
    Analysis,
    DataFacts,
    Diagnosis,
    Evidence,
    Proposal,
    TestResult,
    read_analyses,
    read_data_facts,
    read_test_results,
    write_analysis,
    write_data_facts,
    write_test_result,
)
from hpo.runner import open_study
from hpo.sampler.ledger import Ledger
from hpo.sampler.store import claim
from hpo.storage import open_storage, resolve_storage_url

LONG_NOTE = "## Analysis 1\n" + "lr too high; proposals: lower it. " * 200  # several chunks


def _source(tmp_path) -> tuple[str, dict[int, str]]:
    """A SQLite study with every kind of trial, attrs, analyses and dashboard notes."""
    url = f"sqlite:///{tmp_path / 'small.db'}"
    project = make_project(tmp_path / "p")
    study = open_study(load_study(str(project / "studies" / "rt.yaml")), url)
    study.set_user_attr("analyses", [{"diagnosis": "lr too high", "proposals": [{"lr": 1e-3}]}])
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    notes = {}
    for i in range(3):
        trial = study.ask(dist)
        trial.report(0.5 + i / 10, 1)
        trial.set_user_attr("curve", {"val_accuracy": [0.5 + i / 10]})
        notes[trial.number] = f"trial {trial.number}: " + "x" * (1500 * i + 10)
        save_note(trial, notes[trial.number])
        study.tell(trial, 0.5 + i / 10)
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.005}, distributions=dist,
                                 intermediate_values={1: 0.1}, value=0.1,
                                 user_attrs={"prune_reason": "pruner stopped it at epoch 1"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"lr": 0.004}, distributions=dist,
                                 user_attrs={"fail_reason": "RuntimeError: boom"}))
    study.enqueue_trial({"lr": 0.002}, user_attrs={"proposed_by": "analysis 1"})
    save_note(study, LONG_NOTE)
    _hpo_records(study)
    return url, notes


def _hpo_records(study: optuna.Study) -> None:
    """One of each typed value hpo stores in a study, through its writer in hpo.record."""
    write_analysis(study, Analysis(
        id="every_n-0003", analyst="rules", n_trials_seen=3, summary="lr <b>high</b>",
        diagnosis=[Diagnosis(state="overfitting", summary="val loss rises",
                             evidence=[Evidence(trial=1, metric="val_loss", value=0.41,
                                                note="min at epoch 1")])],
        proposals=[Proposal(params={"lr": 0.002}, rationale="lower", confidence=0.7,
                            status="enqueued", trial_number=5)]))
    write_data_facts(study, DataFacts(classes=["ok", "scratch"], image_size=16, channels=3,
                                      mean=[0.5] * 3, std=[0.25] * 3, fingerprint="ab12",
                                      counts={"train": {"ok": 8, "scratch": 8}}))
    write_test_result(study, TestResult(
        trial=0, sizes={"train": 16, "val": 4, "test": 4}, classes=["ok", "scratch"],
        accuracy=0.75, accuracy_ci=(0.25, 1.0), macro_f1=0.73, macro_f1_ci=(0.2, 1.0),
        confusion=[[2, 0], [1, 1]], checkpoint="abc", checkpoint_epoch=1,
        evaluated_at="2026-11-29T00:00:00+00:00"))
    Ledger(study).record(outcome="ok", model="m", prompt_tokens=10, completion_tokens=5)
    claim(study, "every_n-0006")


def _hpo_stored(url: str) -> tuple[dict, list, object, dict]:
    """What hpo stores in study rt (its own system attrs, but for the mark ``hpo migrate``
    leaves on the source), and each read back as its model."""
    study = load(url)
    attrs = study_system_attrs(study)
    ours = {k: v for k, v in attrs.items() if k.startswith("hpo:") and k != MOVED_ATTR}
    return ours, read_analyses(attrs), read_data_facts(study), read_test_results(attrs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_migrate_round_trip_keeps_trials_attrs_and_notes(kind, tmp_path):
    src_url, notes = _source(tmp_path)
    dst_url = make_storage(kind, tmp_path)
    try:
        code = finish(spawn(["migrate", "rt", "--from", src_url, "--to", dst_url], tmp_path,
                            tmp_path / "m.log"), 100)
        out = (tmp_path / "m.log").read_text()
        assert code == 0, out
        assert "copied study 'rt': 6 trials" in out
        assert PASSWORD not in out

        src, dst = load(src_url), load(dst_url)
        assert src.user_attrs == dst.user_attrs  # config, search space, analyses
        # hpo's own records (analyses, ledger, claims, test results, data facts) unchanged,
        # and each reads back as the same model
        stored = _hpo_stored(src_url)
        assert stored == _hpo_stored(dst_url)
        assert len(stored[0]) == 4 and stored[1][0].proposals[0].trial_number == 5
        assert src.direction == dst.direction
        a, b = src.get_trials(deepcopy=False), dst.get_trials(deepcopy=False)
        assert [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs,
                 t.system_attrs) for t in a] == \
               [(t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs,
                 t.system_attrs) for t in b]
        system = dst._storage.get_study_system_attrs(dst._study_id)
        assert get_note_from_system_attrs(system, None)["body"] == LONG_NOTE
        for t in b:  # notes follow their trial, whose internal id changed
            if t.number in notes:
                assert get_note_from_system_attrs(system, t._trial_id)["body"] == notes[t.number]

        # never overwrites: a second run refuses with exit code 2 and a redacted URL
        code = finish(spawn(["migrate", "rt", "--from", src_url, "--to", dst_url], tmp_path,
                            tmp_path / "m2.log"), 100)
        out = (tmp_path / "m2.log").read_text()
        assert code == 2 and "never overwrites" in out
        assert PASSWORD not in out
    finally:
        drop_storage(dst_url)


def test_migrate_refuses_a_study_with_running_trials(tmp_path):
    src_url, _ = _source(tmp_path)
    load(src_url).ask()  # a trial some worker is running
    with pytest.raises(ConfigError, match="running"):
        migrate_study("rt", src_url, f"sqlite:///{tmp_path / 'big.db'}")


@pytest.mark.timeout(120)
def test_a_copy_that_fails_half_way_is_deleted_and_can_be_re_run(tmp_path):
    """A real failure: MariaDB's TEXT column holds 64 KiB, SQLite took a bigger study attr. The
    trials are copied by then; the half-copied study must not block the next attempt."""
    src_url, _ = _source(tmp_path)
    big = [{"id": f"every_n-{i:04d}", "summary": "x" * 1000} for i in range(80)]  # ~82 kB
    load(src_url).set_user_attr("analyses_archive", big)
    dst_url = make_storage("mysql", tmp_path)
    try:
        with pytest.raises(MigrationError) as err:
            migrate_study("rt", src_url, dst_url)
        text = str(err.value)
        assert "failed at study user attr 'analyses_archive' (StorageInternalError" in text, text
        assert "Data too long for column" in text  # the database's own reason
        assert "the partial copy was deleted" in text and "the source is untouched" in text
        assert PASSWORD not in text
        # nothing of the study is left in the destination, so a re-run is not refused
        assert optuna.get_all_study_names(open_storage(resolve_storage_url(dst_url))) == []
        assert len(load(src_url).trials) == 6  # the source is untouched

        load(src_url).set_user_attr("analyses_archive", big[:10])  # fits now
        assert migrate_study("rt", src_url, dst_url).startswith("copied study 'rt': 6 trials")
        assert load(dst_url).user_attrs["analyses_archive"] == big[:10]
    finally:
        drop_storage(dst_url)


@pytest.mark.timeout(400)
def test_a_study_whose_worker_was_killed_can_be_migrated(tmp_path):
    """kill -9 the only worker mid-trial: once its heartbeat is stale (grace 3 s) migrate fails
    the trial and queues its retry, as a live worker would, instead of refusing for ever."""
    url = f"sqlite:///{tmp_path / 'small.db'}"
    project = make_project(tmp_path / "p", n_trials=2, max_epochs=40)
    worker = spawn(["study", "rt", "--storage", url, "--no-progress"], project, tmp_path / "w.log")
    victim = wait_for(lambda: running_with_checkpoint(url, 1), 240, what="a running trial")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()

    # refused while the trial's heartbeat is fresh (it may still be running somewhere); once it
    # is stale (grace period 3 s) the trial is dead and migrate goes on: try until it does
    dst_url = f"sqlite:///{tmp_path / 'big.db'}"

    def migrated() -> str | None:
        try:
            return migrate_study("rt", url, dst_url)
        except ConfigError as exc:
            if "are running" not in str(exc):
                raise
            return None  # nothing was written to the destination: retried as it is

    out = wait_for(migrated, 120, every=0.5, what="migrate to accept the dead worker's study")
    assert out.startswith("copied study 'rt': 2 trials")  # the dead trial and its retry
    trials = load(dst_url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].system_attrs["failed_trial"] == victim.number
    assert trials[1].params == victim.params
    assert trials[1].user_attrs["checkpoint"]["epoch"] >= 1  # resumes from its checkpoint there
    assert [t.state for t in load(url).get_trials(deepcopy=False)] == \
        [TrialState.FAIL, TrialState.WAITING]  # the source got the same, as a worker would do
