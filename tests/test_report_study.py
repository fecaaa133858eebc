"""`hpo report` on small real studies: the numbers in the files are the numbers in the storage."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from report_studies import make_study

from hpo.cli import main
from hpo.report import build_report
from hpo.report.analyses import LEDGER_PREFIX
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
    assert html.count("Plotly.newPlot(") == 7  # every figure of a study with completed trials
    # plotly.js embedded once, then one inline script per figure; nothing loaded from outside
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="text/javascript">'] * 8
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


def test_cli_writes_both_files(storage: str, tmp_path: Path, capsys) -> None:
    assert main(["report", "plain", "--storage", storage, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "plain.html").stat().st_size > 1_000_000  # plotly.js inside
    assert (tmp_path / "plain.md").read_text().startswith("# Study report: plain")
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
