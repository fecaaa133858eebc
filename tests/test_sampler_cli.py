"""llm-tpe config errors and ``hpo analyze`` through the real CLI (no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hpo.config import load_study
from hpo.errors import ConfigError
from hpo.sampler import load_analyses


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
    assert main(["analyze", "mobilenet", "--storage", f"sqlite:///{tmp_path / 'e.db'}"]) == 1
    assert "no study 'mobilenet'" in capsys.readouterr().err
