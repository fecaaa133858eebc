"""llm-tpe config errors and ``hpo analyze`` through the real CLI (no training)."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from test_sampler_helpers import GOOD, FakeLLM

from hpo.config import load_study
from hpo.errors import ConfigError
from hpo.sampler import load_analyses
from hpo.sampler.ledger import Ledger


def write_study(tmp_path, sampler: str):
    (tmp_path / "studies").mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(
        "params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n")
    path = tmp_path / "studies" / "x.yaml"
    path.write_text(f"search_space: s\nsampler: {sampler}\n")
    return str(path)


@pytest.mark.parametrize("sampler,key", [
    ("{type: llm-tpe, analyst: llm}", "sampler"),
    ("{type: llm-tpe, llm: {base_url: 'http://h/v1', model: m, api_key_env: sk-abc}}",
     "sampler.llm.api_key_env"),
    ("{type: llm-tpe, every_n: 3}", "sampler.every_n"),
    ("{type: llm-tpe, max_proposal_share: 1.5}", "sampler.max_proposal_share"),
    ("{type: llm-tpe, analyst: oracle}", "sampler.analyst"),
])
def test_bad_llm_tpe_config_names_file_and_key(tmp_path, sampler, key):
    with pytest.raises(ConfigError) as err:
        load_study(write_study(tmp_path, sampler))
    assert err.value.key == key and "x.yaml" in err.value.file and err.value.allowed


def test_good_llm_tpe_config(tmp_path):
    cfg = load_study(write_study(tmp_path, "{type: llm-tpe, every_n_trials: 4, llm: {base_url: "
                                           "'http://127.0.0.1:1/v1', model: m, api_key_env: K}}"))
    assert cfg.sampler.type == "llm-tpe" and cfg.sampler.resolved_analyst() == "llm"
    assert cfg.sampler.max_proposal_share == pytest.approx(1 / 3)


def test_hpo_analyze_prints_and_enqueues(tmp_path, hpo_cli):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    dists = {"lr": FloatDistribution(1e-3, 1e-2, log=True),
             "optimizer": CategoricalDistribution(["adamw", "sgd"])}
    for i, lr in enumerate([0.001, 0.002, 0.004, 0.008]):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "optimizer": "adamw"}, distributions=dists, value=0.5 + i / 10,
            user_attrs={"curve": {"val_accuracy": [0.3, 0.4 + i / 10], "val_loss": [1.0, 0.8],
                                  "train_loss": [1.1, 0.9]}}))
    out = hpo_cli("analyze", "smoke", "--storage", url)
    assert out.returncode == 0, out.stderr
    assert "Proposal 1" in out.stdout and "rules" in out.stdout and "best trial 3" in out.stdout
    analyses = load_analyses(optuna.load_study(study_name="smoke", storage=url))
    assert analyses[0]["trigger"] == "manual"
    assert any(p["status"] == "enqueued" for p in analyses[0]["proposals"])


def test_hpo_analyze_unknown_study(tmp_path, capsys, monkeypatch, repo):
    from hpo.cli import main

    monkeypatch.chdir(repo)
    missing = f"sqlite:///{tmp_path / 'e.db'}"  # no such file: refused, nothing created
    assert main(["analyze", "mobilenet", "--storage", missing]) == 2
    assert "no SQLite file" in capsys.readouterr().err and not (tmp_path / "e.db").exists()
    other = f"sqlite:///{tmp_path / 'o.db'}"  # a storage without that study: bad input too
    optuna.create_study(study_name="other", storage=other)
    assert main(["analyze", "mobilenet", "--storage", other]) == 2
    assert "no study 'mobilenet'" in capsys.readouterr().err


# -- hpo analyze --dry-run writes nothing; an LLM that does not answer exits 3 ------------------

def llm_study(tmp_path, base_url: str) -> str:
    """studies/x.yaml: llm-tpe with the LLM analyst on ``base_url`` (a local endpoint)."""
    (tmp_path / "studies").mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(
        "params:\n  lr: {type: float, low: 1.0e-4, high: 0.1, log: true}\n")
    path = tmp_path / "studies" / "x.yaml"
    path.write_text(yaml.safe_dump({"search_space": "s", "sampler": {
        "type": "llm-tpe", "analyst": "llm", "llm": {
            "base_url": base_url, "model": "fake-model", "max_retries": 0, "timeout": 30,
            "response_format": "json_schema"}}}))
    return str(path)


def seed_study(url: str) -> None:
    study = optuna.create_study(study_name="x", storage=url, direction="maximize")
    dists = {"lr": FloatDistribution(1e-4, 0.1, log=True)}
    for i, lr in enumerate([0.001, 0.002, 0.004, 0.008]):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions=dists, value=0.5 + i / 10,
            user_attrs={"curve": {"val_accuracy": [0.3, 0.4 + i / 10]}}))


def snapshot(url: str) -> str:
    """Everything hpo analyze could write: study attrs (analyses, ledger, cache, notes, claims)
    and every trial with its attrs."""
    study = optuna.load_study(study_name="x", storage=url)
    return json.dumps({
        "system": study._storage.get_study_system_attrs(study._study_id),
        "user": study.user_attrs,
        "trials": [[t.number, t.state.name, t.params, t.user_attrs, t.system_attrs]
                   for t in study.get_trials()]}, sort_keys=True, default=str)


@pytest.fixture
def fake(request):
    server = FakeLLM(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("fake", [[("ok", GOOD)]], indirect=True)
def test_hpo_analyze_dry_run_writes_nothing(tmp_path, hpo_cli, fake):
    path, url = llm_study(tmp_path, fake.url), f"sqlite:///{tmp_path / 'a.db'}"
    seed_study(url)
    before = snapshot(url)
    for analyst in ("llm", "rules"):
        out = hpo_cli("analyze", path, "--storage", url, "--dry-run", "--analyst", analyst)
        assert out.returncode == 0, out.stderr
        assert "Proposal 1" in out.stdout and f"({analyst}" in out.stdout
        assert "dry run: nothing was stored or enqueued" in out.stderr
        assert snapshot(url) == before, analyst  # byte-identical: no analysis, ledger, note
    assert len(fake.requests) == 1  # the LLM dry run did ask the endpoint

    # the same command without --dry-run does write (so the comparison above can see writes)
    out = hpo_cli("analyze", path, "--storage", url, "--analyst", "llm")
    assert out.returncode == 0, out.stderr
    assert snapshot(url) != before
    study = optuna.load_study(study_name="x", storage=url)
    assert [a["analyst"] for a in load_analyses(study)] == ["llm"]
    assert [e["outcome"] for e in Ledger(study).entries()] == ["ok"]


@pytest.mark.parametrize("fake", [[("status", 500)]], indirect=True)
def test_hpo_analyze_llm_that_does_not_answer_exits_3(tmp_path, hpo_cli, fake):
    path, url = llm_study(tmp_path, fake.url), f"sqlite:///{tmp_path / 'a.db'}"
    seed_study(url)
    out = hpo_cli("analyze", path, "--storage", url, "--analyst", "llm")
    assert out.returncode == 3, (out.stdout, out.stderr)
    assert "Proposal 1" in out.stdout and "(rules" in out.stdout  # the analysis is printed
    assert "LLM analyst did not answer" in out.stderr and "http_500" in out.stderr
    (a,) = load_analyses(optuna.load_study(study_name="x", storage=url))
    assert a["analyst"] == "rules" and "http_500" in a["fallback_reason"]
    # a dry run falls back the same way (and exits 3), and the rules analyst asked for exits 0
    out = hpo_cli("analyze", path, "--storage", url, "--analyst", "llm", "--dry-run")
    assert out.returncode == 3, (out.stdout, out.stderr)
    out = hpo_cli("analyze", path, "--storage", url, "--analyst", "rules", "--dry-run")
    assert out.returncode == 0, out.stderr
