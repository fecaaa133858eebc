"""Accuracy against latency (issue 14, item 6), through the real commands: a multi-objective
study (``objective`` as a list) -> its Pareto front in ``hpo report`` -> ``hpo export`` picks
a trial from the front by a rule; config errors; the one line about pruning.

One tiny study (3 trials, 1 epoch, 24 px generated defects) is shared by the module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ok, run_hpo, write_study_file

from hpo.cli import main
from hpo.config import load_study
from hpo.errors import ConfigError
from hpo.runner import MULTI_OBJECTIVE_ANALYSTS, MULTI_OBJECTIVE_PRUNING, multi_objective_notes

NAME = "pareto-smoke"
SPACE = {"params": {"model_name": {"type": "categorical",
                                   "choices": ["lcnet_035", "mobilenetv3_small_050"]},
                    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}


BASE = {"seed": 0, "dataset": {"name": "defects", "n_per_class": 8, "val_fraction": 0.25},
        "model": {"name": "mobilenetv3_small_050", "image_size": 24},
        "search_space": "space.yaml", "train": {"batch_size": 32},
        "objective": [{"metric": "val_accuracy", "direction": "maximize"},
                      {"metric": "latency_ms", "direction": "minimize"}],
        "budget": {"n_trials": 3, "max_epochs": 1},
        "sampler": {"type": "tpe", "n_startup_trials": 2}}  # pruner: median (the default)


def write_study(folder: Path, name: str = NAME, **sections: object) -> Path:
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE), encoding="utf-8")
    return write_study_file(folder, name, BASE, **sections)


@pytest.fixture(scope="module")
def pareto(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pareto")
    db = f"sqlite:///{root / 'hpo.db'}"
    study_out = ok(run_hpo("study", str(write_study(root)), "--storage", db, "--no-progress",
                           cwd=root))
    report_out = ok(run_hpo("report", NAME, "--storage", db, "--out", str(root / "reports"),
                            cwd=root))
    export_out = ok(run_hpo("export", NAME, "--storage", db, "--out", str(root / "bundle"),
                            cwd=root))
    study = optuna.load_study(study_name=NAME, storage=db)
    return {"root": root, "db": db, "study": study, "study_out": study_out,
            "report_out": report_out, "export_out": export_out}


def test_a_multi_objective_study_runs_with_one_line_about_pruning(pareto) -> None:
    out, study = pareto["study_out"], pareto["study"]
    assert out.count(MULTI_OBJECTIVE_PRUNING) == 1, out
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "latency_ms"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:
        accuracy, latency = t.values
        assert accuracy == pytest.approx(max(t.user_attrs["curve"]["val_accuracy"]), abs=1e-6)
        assert latency == t.user_attrs["latency_ms"] > 0
        assert t.intermediate_values == {}  # nothing reported: Optuna cannot prune these
    assert "Pareto front (val_accuracy, latency_ms)" in out


def test_the_report_draws_the_pareto_front(pareto) -> None:
    reports, study = pareto["root"] / "reports", pareto["study"]
    md = (reports / f"{NAME}.md").read_text(encoding="utf-8")
    html = (reports / f"{NAME}.html").read_text(encoding="utf-8")
    front = sorted(t.number for t in study.best_trials)
    section = md.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert sorted(int(r.split("|")[1]) for r in rows) == front
    assert "maximize val\\_accuracy, minimize latency\\_ms" in md
    assert "## Best trial" not in md  # no single best: the front instead
    assert "Pareto front" in html and "plotly" in html
    header = (reports / f"{NAME}.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("number,state,value,latency_ms,")


def test_compare_says_it_follows_the_first_objective_and_draws_the_fronts(pareto) -> None:
    from hpo.report.compare import pareto_fronts
    from hpo.report.data import load

    study, db, root = pareto["study"], pareto["db"], pareto["root"]
    other = optuna.create_study(study_name="pareto-b", storage=db,
                                directions=["maximize", "minimize"])
    other.set_metric_names(["val_accuracy", "latency_ms"])
    other.add_trials(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[:2])
    said = ok(run_hpo("compare", NAME, "pareto-b", "--storage", db, "--out",
                      str(root / "reports"), cwd=root))
    md = (root / "reports" / f"compare-{NAME}-pareto-b.md").read_text(encoding="utf-8")
    assert f"**several objectives**: {NAME}, pareto-b: the tables" in md, said
    assert "## Pareto fronts" in md and "val\\_accuracy against latency\\_ms" in md
    fig = pareto_fronts([load(NAME, db), load("pareto-b", db)])
    for trace, s in zip(fig.data, (study, other)):
        front = sorted(s.best_trials, key=lambda t: t.values[0])
        assert trace.name == s.study_name
        assert list(trace.x) == [t.values[0] for t in front]
        assert list(trace.y) == [t.values[1] for t in front]


def test_export_picks_the_fastest_trial_within_one_point(pareto) -> None:
    study, out = pareto["study"], pareto["export_out"]
    front = study.best_trials
    top = max(t.values[0] for t in front)
    expected = min((t for t in front if t.values[0] >= top - 0.01),
                   key=lambda t: (t.values[1], -t.values[0], t.number))
    assert f"--pick fastest-within:1: trial {expected.number}, the lowest latency_ms" in out
    meta = json.loads((pareto["root"] / "bundle" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["trial"] == expected.number
    assert meta["metrics"]["objective"]["costs"] == {"latency_ms": expected.values[1]}
    assert meta["model"]["timm_name"] == expected.params["model_name"]
    assert meta["onnx"]["check"]["latency_ms"] > 0  # measured on the exported path too


def test_export_rules_and_trial_choices(pareto, capsys) -> None:
    db, study = pareto["db"], pareto["study"]
    out = str(pareto["root"] / "never")
    assert main(["export", NAME, "--storage", db, "--out", out, "--pick", "fastest-within:x"]) == 2
    assert "allowed: one of fastest-within:X, smallest-within:X, best" in capsys.readouterr().err
    assert main(["export", NAME, "--storage", db, "--out", out, "--pick", "smallest-within:1"]) == 2
    assert "its objectives: val_accuracy, latency_ms" in capsys.readouterr().err
    number = study.best_trials[0].number
    assert main(["export", NAME, "--storage", db, "--out", out, "--trial", str(number),
                 "--pick", "best"]) == 2
    assert "without --trial" in capsys.readouterr().err
    assert not Path(out).exists()


@pytest.mark.parametrize(("objective", "message"), [
    ([{"metric": "val_accuracy"}, {"metric": "latency"}],
     "entry 1 ({'metric': 'latency'}): a list of {metric, direction} with exactly one of"),
    ([{"metric": "latency_ms"}], "got ['latency_ms']"),
    ([{"metric": "val_accuracy"}, {"metric": "val_loss"}], "exactly one of"),
    ([{"metric": "val_accuracy"}, {"metric": "params_m"}, {"metric": "params_m"}], "each once"),
    ([{"metric": "val_accuracy"}, {"metric": "latency_ms", "direction": "fast"}],
     "one of 'maximize' or 'minimize'"),
])
def test_objective_list_errors_name_file_key_and_allowed(tmp_path, objective, message) -> None:
    path = write_study(tmp_path, objective=objective)
    with pytest.raises(ConfigError) as info:
        load_study(str(path))
    assert info.value.file == str(path) and info.value.key.startswith("objective")
    assert message in info.value.allowed


def test_samplers_and_what_steps_aside(tmp_path) -> None:
    cfg = load_study(str(write_study(tmp_path)))
    assert cfg.is_multi_objective and cfg.objectives == [("val_accuracy", "maximize"),
                                                         ("latency_ms", "minimize")]
    llm = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"type": "llm-tpe"}),
                                 "pruner": cfg.pruner.model_copy(update={"type": "none"})})
    assert multi_objective_notes(llm) == [MULTI_OBJECTIVE_ANALYSTS]
    single = load_study(str(write_study(tmp_path, "single", objective={"metric": "val_accuracy"})))
    assert not single.is_multi_objective and multi_objective_notes(single) == []
    assert "costs" not in single.model_dump()["objective"]  # stored configs as before


def test_nsga2_study_on_parameter_count(tmp_path, capsys) -> None:
    path = write_study(tmp_path, "nsga", objective=[{"metric": "val_accuracy"},
                                                    {"metric": "params_m"}],
                       sampler={"type": "nsga2", "n_startup_trials": 2},
                       pruner={"type": "none"})
    db = f"sqlite:///{tmp_path / 'hpo.db'}"
    assert main(["study", str(path), "--storage", db, "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert MULTI_OBJECTIVE_PRUNING not in out  # pruner none: nothing was dropped
    study = optuna.load_study(study_name="nsga", storage=db)
    sizes = {"lcnet_035": 0.3698, "mobilenetv3_small_050": 0.5733}  # 5 classes
    for t in study.trials:
        assert t.values[1] == pytest.approx(sizes[t.params["model_name"]], abs=1e-4)
