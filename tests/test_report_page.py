"""What `hpo report` tells a reader (issue 15): capped tables with every trial in the CSV,
human durations, only the pruner's own options, numbered and readable proposals, importances with
a caution, the ledger only when an LLM was asked, and where the best trial came from and lives."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from report_studies import make_study, study_config

from hpo.config import PrunerConfig
from hpo.markdown import analysis_markdown, duration, fmt_pair
from hpo.record import ARTIFACTS_ATTR, CHECKPOINT_REMOVED_PREFIX, CONFIG_ATTR, Analysis, Proposal
from hpo.report import build_report
from hpo.report.study_report import MIN_IMPORTANCE_TRIALS, TABLE_ROWS

LR = optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)


@pytest.fixture(scope="module")
def llm_report(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("report-page")
    url = f"sqlite:///{tmp}/hpo.db"
    make_study(url, "with-llm", n_trials=14, analysis_after=6)
    return build_report("with-llm", url, out_dir=tmp)


def _study(n_complete: int, n_pruned: int, pruner: PrunerConfig | None = None,
           duration_s: float = 12.5, **best_attrs) -> optuna.Study:
    """Complete and pruned trials by hand (no training): values rise with the trial number, so
    the last complete one is the best (it gets ``best_attrs`` as user attrs)."""
    cfg = study_config("many")
    if pruner is not None:
        cfg.pruner = pruner
    study = optuna.create_study(study_name="many", direction="maximize")
    study.set_user_attr(CONFIG_ATTR, cfg.model_dump(mode="json"))
    trials = []
    for i in range(n_complete + n_pruned):
        pruned = i >= n_complete
        n = 1 + i % 3 if pruned else 8
        curve = [round(0.01 * i + 0.01 * e, 4) for e in range(n)]
        trials.append(optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            value=None if pruned else curve[-1], params={"lr": 1e-4 * (1 + i)},
            distributions={"lr": LR}, intermediate_values=dict(enumerate(curve, 1)),
            user_attrs={"epochs": n, "duration_s": duration_s,
                        "curve": {"val_accuracy": curve, "train_loss": [1 - c for c in curve],
                                  "val_loss": [1.1 - c for c in curve]},
                        **(best_attrs if i == n_complete - 1 else {})}))
    study.add_trials(trials)
    return study


def test_long_tables_show_twenty_rows_and_every_trial_is_in_the_csv(tmp_path: Path) -> None:
    rep = build_report(_study(3, TABLE_ROWS + 15), out_dir=tmp_path)
    html, md = rep.html.read_text(), rep.markdown.read_text()
    pruned_table = md.split("### Pruned trials")[1].split("\n\n## ")[0]
    rows = [line for line in pruned_table.splitlines() if re.match(r"^\| \d", line)]
    assert len(rows) == TABLE_ROWS  # the 20 that trained longest, not 35
    study_trials = _study(3, TABLE_ROWS + 15).trials
    pruned = sorted((t.user_attrs["epochs"] for t in study_trials if t.state == TrialState.PRUNED),
                    reverse=True)
    assert [int(r.split("|")[2]) for r in rows] == pruned[:TABLE_ROWS]  # trained longest
    assert "and 15 more pruned trials" in md
    assert "[many.csv](many.csv)" in md and '<a href="many.csv">many.csv</a>' in html
    assert "[many.html](many.html)" in md  # the Markdown links the HTML with the figures

    assert rep.csv == tmp_path / "many.csv"
    with rep.csv.open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["number"]) for r in table] == [t.number for t in study_trials]
    for r, t in zip(table, study_trials):
        assert r["state"] == t.state.name and float(r["params_lr"]) == t.params["lr"]
        assert int(r["epochs"]) == t.user_attrs["epochs"] and r["source"] == "sampler"
        assert r["value"] == ("" if t.value is None else repr(t.value))  # full precision
        assert float(r["duration_s"]) == 12.5


def test_durations_read_as_days_hours_minutes() -> None:
    assert duration(265874.7) == "3 d 1 h 51 min"
    assert duration(252) == "4 min 12 s" and duration(0.8) == "0.8 s"
    assert duration(3600) == "1 h 0 min" and duration(59.94) == "59.9 s"


def test_long_times_in_the_report_are_human_and_sort_as_numbers(tmp_path: Path) -> None:
    html = build_report(_study(3, 1, duration_s=265874.7), out_dir=tmp_path).html.read_text()
    assert "265874.7" not in html.replace('data-v="265874.7"', "")
    assert '<td data-v="265874.7">3 d 1 h 51 min</td>' in html


@pytest.mark.parametrize("kind, shown, hidden", [
    ("median", ["n_startup_trials=3", "n_warmup_steps=1"], ["min_resource", "reduction_factor"]),
    ("hyperband", ["min_resource=1", "reduction_factor=3"], ["n_startup_trials", "n_warmup"]),
    ("none", [], ["n_startup_trials", "min_resource"]),
])
def test_the_pruner_line_lists_only_its_own_options(tmp_path: Path, kind: str, shown: list[str],
                                                    hidden: list[str]) -> None:
    pruner = PrunerConfig(type=kind, n_startup_trials=3, n_warmup_steps=1)
    line = build_report(_study(2, 1, pruner), out_dir=tmp_path).summary["pruner"]
    assert line.startswith(kind) and all(s in line for s in shown)
    assert not any(h in line for h in hidden)


def test_importances_from_few_trials_carry_a_caution(tmp_path: Path) -> None:
    few = build_report(_study(3, 0), out_dir=tmp_path).html.read_text()
    assert f"caution: from only 3 complete trials; importances settle after " \
           f"{MIN_IMPORTANCE_TRIALS}" in few
    enough = build_report(_study(MIN_IMPORTANCE_TRIALS, 0), out_dir=tmp_path).html.read_text()
    assert "caution: from only" not in enough


def test_no_ledger_without_llm_calls(tmp_path: Path, llm_report) -> None:
    plain = build_report(_study(3, 1), out_dir=tmp_path)
    assert "LLM ledger" not in plain.markdown.read_text() and plain.summary["ledger"]["calls"] == 0
    assert "### LLM ledger" in llm_report.markdown.read_text()


def test_proposals_numbered_from_one_with_readable_params(llm_report) -> None:
    s, md, html = llm_report.summary, llm_report.markdown.read_text(), llm_report.html.read_text()
    assert [o["proposal"] for o in s["proposal_outcomes"]] == [1, 2]
    assert re.search(r"^\| 1 \| lr=0\.003, ", md, re.MULTILINE)  # the analysis' table
    assert re.search(r"^\| 2 \| lr=0\.03, ", md, re.MULTILINE)
    assert '{"lr"' not in md and "{&quot;lr&quot;" not in html  # no raw JSON params
    assert "llm proposal 1 of every_n-0006" in html  # the source column and the best trial


def test_two_different_values_never_print_equal() -> None:
    assert fmt_pair(0.03, 0.029996) == ("0.03", "0.029996")
    assert fmt_pair(1.0000001, 1.0) == ("1.0000001", "1")
    assert fmt_pair("adamw", "adamw") == ("adamw", "adamw")
    a = Analysis(id="every_n-0001", proposals=[Proposal(params={"lr": 0.029996})])
    text = analysis_markdown(a, diffs=[[{"param": "lr", "old": 0.03, "new": 0.029996,
                                         "change": "decrease"}]])
    assert "`lr`: 0.03 -> 0.029996 (decrease)" in text


def test_the_top_says_what_ran_and_what_the_analyses_recommended(llm_report) -> None:
    md = llm_report.markdown.read_text()
    top = md.split("## Best trial")[0]
    for line in ("- **model**: mobilenetv3\\_small\\_050", "- **data**: digits",
                 "- **image size**: 32 x 32", "by hpo "):
        assert line in top
    assert "### What the analyses recommended" in top
    assert "- **analyses**: 1 by llm, with 2 proposals (2 trials ran one)" in top
    assert "- **its proposal 1**: lr=0.003, " in top
    best = llm_report.summary["best_trial"]
    assert f"- **trial**: {best}" in md
    assert re.search(r"^\| rank \| trial \| value \| train loss \| val loss \| accuracy ", md,
                     re.MULTILINE)


def test_the_best_checkpoint_location_or_its_removal(tmp_path: Path) -> None:
    study = _study(3, 0, checkpoint={"artifact_id": "abc-123", "epoch": 8, "trial": 2})
    assert study.best_trial.number == 2
    study.set_user_attr(ARTIFACTS_ATTR, "/data/artifacts")
    md = build_report(study, out_dir=tmp_path).markdown.read_text()
    assert "- **checkpoint**: /data/artifacts/abc-123 (epoch 8)" in md
    study._storage.set_study_system_attr(study._study_id, CHECKPOINT_REMOVED_PREFIX + "abc-123",
                                         True)
    md = build_report(study, out_dir=tmp_path).markdown.read_text()
    assert "- **checkpoint**: removed by checkpoint retention (epoch 8)" in md


def test_evidence_numbers_and_number_cells_read_well(llm_report) -> None:
    md, html = llm_report.markdown.read_text(), llm_report.html.read_text()
    assert re.search(r"val\\_accuracy = 0\.\d{1,4}: best so far", md)  # not 0.978315000001
    # a number's cell (a duration too) sorts by its value and stays on one line
    assert '<td data-v="1.0">1</td>' in html and "td[data-v],td.nw{white-space:nowrap}" in html
    assert '<td class="nw">llm proposal 1 of every_n-0006</td>' in html  # source: one line


def test_reading_one_study_costs_the_same_however_many_share_its_storage(tmp_path: Path) -> None:
    """Only the study's name is checked against the storage (``get_all_study_names``), not
    every study's summary: the SQL statements of a load do not grow with the other studies."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from hpo.report.data import load

    url = f"sqlite:///{tmp_path}/hpo.db"
    make_study(url, "mine", n_trials=4)

    def statements() -> int:
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:
            seen.append(statement)

        event.listen(Engine, "before_cursor_execute", count)
        try:
            assert len(load("mine", url).trials) == 4
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        return sum(" trials" in s for s in seen)

    alone = statements()
    for i in range(4):
        other = optuna.create_study(study_name=f"other-{i}", storage=url)
        other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert statements() == alone
