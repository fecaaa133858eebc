"""`hpo report` on small real studies: the numbers in the files are the numbers in the storage."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from report_studies import make_study

from hpo.cli import main
from hpo.record import LEDGER_PREFIX
from hpo.report import build_report
from hpo.report.render import fmt


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report')}/hpo.db"
    make_study(url, "plain", n_trials=12)
    make_study(url, "with-llm", n_trials=14, analysis_after=6)
    return url


def test_summary_and_best_trial_match_the_storage(storage: str, tmp_path: Path) -> None:
    rep = build_report("plain", storage, out_dir=tmp_path)
    study = optuna.load_study(study_name="plain", storage=storage)
    trials = study.get_trials()
    s = rep.summary
    counts = {st.name: sum(t.state == st for t in trials) for st in TrialState}
    assert s["trials"] == {k: v for k, v in counts.items() if v}
    assert counts["PRUNED"] > 0 and counts["COMPLETE"] > 0
    assert s["best_trial"] == study.best_trial.number and s["best_value"] == study.best_value
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trained = sum(t.user_attrs["epochs"] for t in finished)
    assert s["epochs_trained"] == trained
    assert s["epochs_without_pruning"] == 8 * len(finished)  # budget.max_epochs
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    assert s["wall_time_s"] == pytest.approx(span.total_seconds(), abs=1e-3)

    md = rep.markdown.read_text()
    assert f"complete {counts['COMPLETE']}, pruned {counts['PRUNED']}" in md
    assert f"{trained} of {8 * len(finished)} epochs" in md
    assert f"**value**: {fmt(study.best_value)}" in md
    # the diff against StudyConfig.defaults(): the study's train.lr is 1e-3
    lr = study.best_params["lr"]
    row = next(d for d in s["best_diff"] if d["param"] == "lr")
    assert (row["old"], row["new"]) == (0.001, lr)
    assert row["change"] == ("increase" if lr > 0.001 else "decrease")
    assert f"| lr | 0.001 | {fmt(lr)} | {row['change']} |" in md
    # top-k table: ranks follow the stored values
    best3 = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:3]
    for rank, t in enumerate(best3, 1):
        assert re.search(rf"^\| {rank} \| {t.number} \| {re.escape(fmt(t.value))} \|", md, re.MULTILINE)

    html = rep.html.read_text()
    assert html.count("Plotly.newPlot(") == 10  # every figure of a study with completed trials
    # plotly.js embedded once, the tables' sort script, then one inline script per figure;
    # nothing loaded from outside
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="text/javascript">'] * (
        2 + html.count("Plotly.newPlot("))
    assert html.count("plotly.js v") >= 1 and "no analyses" in html
    assert "connect-src 'none'" in html and "default-src 'none'" in html  # CSP: no network


def test_analyses_outcomes_hit_rate_and_ledger(storage: str, tmp_path: Path) -> None:
    rep = build_report("with-llm", storage, out_dir=tmp_path)
    study = optuna.load_study(study_name="with-llm", storage=storage)
    trials = study.get_trials()
    s = rep.summary
    assert s["n_analyses"] == 1
    proposed = [t for t in trials if t.user_attrs.get("hpo_source") == "llm"]
    assert [o["trial"] for o in s["proposal_outcomes"]] == [t.number for t in proposed]
    completed = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    for o, t in zip(s["proposal_outcomes"], proposed):
        assert o["state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert o["value"] == t.value
            assert o["rank"] == [c.number for c in completed].index(t.number) + 1
    rates = s["hit_rates"]
    assert rates["proposals"]["trials"] == len(proposed)
    assert rates["sampler"]["trials"] == len(trials) - len(proposed)

    attrs = study._storage.get_study_system_attrs(study._study_id)
    ledger = [v for k, v in attrs.items() if k.startswith(LEDGER_PREFIX)]
    assert s["ledger"]["calls"] == len(ledger) == 3
    assert s["ledger"]["tokens"] == sum(e["prompt_tokens"] + e["completion_tokens"] for e in ledger)
    assert s["ledger"]["failures"] == sum(e["outcome"] != "ok" for e in ledger) == 1
    assert s["ledger"]["cost"] == pytest.approx(sum(e["cost"] for e in ledger))

    md, html = rep.markdown.read_text(), rep.html.read_text()
    assert "underfitting: accuracy still rising" in md and "- **calls**: 3" in md
    # LLM text is escaped everywhere: no tag from it reaches either file
    assert "<script>window.__xss" not in html and "<img src=x" not in html
    assert "\\<script\\>window" in md and re.search(r"(?<!\\)<", md) is None  # all \< in md
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


def test_cli_writes_every_file_and_names_it(storage: str, tmp_path: Path, capsys) -> None:
    assert main(["report", "plain", "--storage", storage, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "plain.html").stat().st_size > 1_000_000  # plotly.js inside
    assert (tmp_path / "plain.md").read_text().startswith("# Study report: plain")
    written = capsys.readouterr().out  # every file it wrote is named, the CSV too
    assert all(str(tmp_path / f"plain.{ext}") in written for ext in ("html", "md", "csv"))
    assert main(["report", "nope", "--storage", storage, "--out", str(tmp_path)]) == 2
    assert "plain" in capsys.readouterr().err  # the error lists the studies that exist


def test_tensorboard_export_matches_stored_curves(storage: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="optional extra: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hpo.report.tensorboard import export_tensorboard

    root = export_tensorboard("plain", storage, out_root=tmp_path)
    study = optuna.load_study(study_name="plain", storage=storage)
    assert sorted(p.name for p in root.iterdir()) == sorted(f"trial-{t.number}" for t in study.trials)
    best = study.best_trial
    acc = EventAccumulator(str(root / f"trial-{best.number}"))
    acc.Reload()
    values = [e.value for e in acc.Scalars("val_accuracy")]
    assert values == pytest.approx(best.user_attrs["curve"]["val_accuracy"], rel=1e-6)
    assert [e.step for e in acc.Scalars("lr")] == list(range(1, best.user_attrs["epochs"] + 1))


def _hand_study(max_epochs: int = 8, **best_attrs) -> optuna.Study:
    """Trials of every state, by hand: complete (full and early-stopped), pruned, failed with a
    partial curve, running, and a never-run trial that lost the budget race."""
    from report_studies import study_config

    from hpo.record import CONFIG_ATTR, LOST_RACE_ATTR

    cfg = study_config("hand")
    study = optuna.create_study(study_name="hand", direction="maximize")
    study.set_user_attr(CONFIG_ATTR, cfg.model_dump(mode="json"))
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)}

    def add(state, epochs, lr, value=None, **attrs):
        curve = [round(0.1 * (e + 1), 3) for e in range(epochs)]
        study.add_trial(optuna.trial.create_trial(
            state=state, params={"lr": lr}, distributions=dist, value=value,
            intermediate_values=dict(enumerate(curve, 1)),
            user_attrs={"curve": {"val_accuracy": curve}, "epochs": epochs, **attrs}))

    add(TrialState.COMPLETE, max_epochs, 3e-3, 0.8, **best_attrs)
    add(TrialState.COMPLETE, 5, 2e-3, 0.5)  # stopped early by the recipe's early stopping
    add(TrialState.PRUNED, 2, 1e-2, 0.2, prune_reason="pruner stopped it at epoch 2")
    add(TrialState.FAIL, 3, 5e-3, fail_reason="RuntimeError: CUDA out of memory")
    add(TrialState.RUNNING, 4, 1e-3)
    lost = study.ask()
    study._storage.set_trial_system_attr(lost._trial_id, LOST_RACE_ATTR, True)
    study._storage.set_trial_state_values(lost._trial_id, state=TrialState.FAIL)
    return study


def test_pruning_and_early_stopping_savings_are_told_apart(tmp_path: Path) -> None:
    rep = build_report(_hand_study(), out_dir=tmp_path)
    s = rep.summary
    assert s["storage"] == "in-memory"
    # the never-run lost-race trial is not counted; the failed one with a curve is
    assert s["trials"] == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "RUNNING": 1}
    assert (s["epochs_trained"], s["epochs_without_pruning"]) == (8 + 5 + 2, 3 * 8)
    assert s["epochs_saved_by_pruning"] == 6 and s["epochs_saved_by_early_stopping"] == 3
    assert s["pruning_saving"] == pytest.approx(6 / 24)
    assert s["early_stopping_saving"] == pytest.approx(3 / 24)
    assert ("15 of 24 epochs (6 epochs, 25.0%, saved by pruning; 3 epochs, 12.5%, by early "
            "stopping)") in rep.markdown.read_text()


def test_learning_curves_tell_failed_and_running_trials_from_pruned_ones() -> None:
    from hpo.report import figures
    from hpo.report.data import load

    fig, _ = figures.learning_curves(load(_hand_study()))
    traces = {tr.name: tr for tr in fig.data}
    assert set(traces) == {"trial 0 (best)", "trial 1", "trial 2 (pruned)", "trial 3 (failed)",
                           "trial 4 (running)"}
    style = {name: (tr.line.dash, tr.opacity, tr.marker.symbol) for name, tr in traces.items()}
    assert len({style[n] for n in ("trial 2 (pruned)", "trial 3 (failed)", "trial 4 (running)",
                                   "trial 1")}) == 4  # four states, four looks
    assert style["trial 2 (pruned)"][1] < style["trial 3 (failed)"][1]  # only pruned faded


def test_storage_label_of_a_loaded_study_is_its_url(storage: str, tmp_path: Path) -> None:
    study = optuna.load_study(study_name="plain", storage=storage)  # Optuna's cached storage
    assert build_report(study, out_dir=tmp_path).summary["storage"] == storage


def test_planned_schedule_uses_the_stored_dataset_size_else_says_approximate() -> None:
    from report_studies import DEFAULTS, MAX_EPOCHS

    from hpo.report import figures
    from hpo.report.data import load

    data = load(_hand_study())
    fig, note = figures.lr_schedule(data)
    assert "approximate" in fig.data[-1].name and "approximate" in note  # planned trace's legend
    assert not fig.layout.title.text  # the page's heading names the figure, once
    assert "steps per epoch" in note
    planned = figures.planned_schedule(data, data.best)
    assert planned.approximate and len(planned.xs) == 20 * MAX_EPOCHS

    # with the train split's size stored (1437 digits), the steps are the Trainer's own count
    data = load(_hand_study(n_train=1437))
    planned = figures.planned_schedule(data, data.best)
    per_epoch = -(-1437 // DEFAULTS["batch_size"])  # ceil: 23 batches, no accumulation
    assert not planned.approximate and len(planned.xs) == per_epoch * MAX_EPOCHS
    assert "1437 train images" in planned.basis
    fig, note = figures.lr_schedule(data)
    assert "approximate" not in fig.data[-1].name and note == ""
    assert planned.xs[per_epoch - 1] == pytest.approx(1.0)  # epoch 1 ends after 23 steps


def test_planned_schedule_counts_steps_as_the_trainer_does() -> None:
    """The step count the report draws the lr schedule with (``TrainConfig.optimizer_steps``,
    shared with the Trainer) is the number of optimizer steps a real Trainer takes on digits,
    epoch by epoch (batch stages, accumulation)."""
    import torch

    from hpo.data import build_dataset
    from hpo.training import Trainer
    from hpo.training.config import TrainConfig

    data = build_dataset(__import__("hpo.config", fromlist=["DatasetConfig"]).DatasetConfig(),
                         image_size=8)
    cfg = TrainConfig(lr=0.01, epochs=6, batch_size=48, accum_steps=2, batch_stages=2,
                      batch_growth=2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, data.num_classes))
    trainer = Trainer(cfg, model, data)
    taken: list[int] = []
    trainer.optimizer.register_step_post_hook(lambda *_: taken.append(len(trainer.history)))
    trainer.fit()
    planned = [cfg.optimizer_steps(e, len(data.train_y)) for e in range(cfg.epochs)]
    assert [taken.count(e) for e in range(cfg.epochs)] == planned
    assert planned[0] > planned[-1] and sum(planned) == trainer.schedule.total_steps


def test_a_planned_schedule_that_cannot_be_rebuilt_says_why(caplog) -> None:
    from hpo.record import CONFIG_ATTR
    from hpo.report import figures
    from hpo.report.data import load

    study = _hand_study()
    cfg = dict(study.user_attrs[CONFIG_ATTR])
    cfg["train"] = {**cfg["train"], "scheduler": "no-such-schedule"}  # an older/newer hpo's
    study.set_user_attr(CONFIG_ATTR, cfg)
    fig, note = figures.lr_schedule(load(study))
    assert fig is None and note.startswith("planned schedule not drawn (ValidationError")
    assert "no-such-schedule" in caplog.text  # logged, not swallowed


def test_report_reads_the_study_system_attrs_once(storage: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Analyses, ledger and checkpoint marks all live in the study's system attrs, which
    optuna-dashboard-sized studies make large (thousands of keys): a report reads them once."""
    reads: list[int] = []
    real = optuna.storages.RDBStorage.get_study_system_attrs

    def counted(self, study_id: int):  # the real read, counted
        reads.append(study_id)
        return real(self, study_id)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_study_system_attrs", counted)
    rep = build_report("with-llm", storage, out_dir=tmp_path)
    assert rep.summary["n_analyses"] > 0 and len(reads) == 1
