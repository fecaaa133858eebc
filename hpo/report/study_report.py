"""``hpo report NAME``: one study as ``runs/reports/NAME.html`` (self-contained), ``NAME.md``
(which links the HTML) and ``NAME.csv`` (every trial).

Sections: summary (model, data, storage, sampler, pruner, budget, trials by state, wall time,
pruning saving, what the analyses recommended), best trial (value, losses, source, checkpoint,
params against the study's defaults, top-k; a multi-objective study: its Pareto front, figure
and table, instead), figures, pruned trials, analyses (each proposal's
outcome and the hit rate of proposals against TPE's trials) and the LLM ledger (when an LLM was
asked). A long table shows its :data:`TABLE_ROWS` most relevant rows; the CSV has every trial.

    >>> import optuna
    >>> s = optuna.create_study(study_name="doc", direction="maximize")
    >>> s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    >>> build_report(s, out_dir=Path("/tmp")).csv   # doctest: +SKIP
    PosixPath('/tmp/doc.csv')
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.markdown import (
    PROPOSAL_COLUMNS,
    Seconds,
    analysis_markdown,
    duration,
    fmt,
    fmt_pair,
    params_text,
)
from hpo.record import (
    DURATION_ATTR,
    PRUNE_REASON_ATTR,
    Analysis,
    read_data_facts,
    read_test_results,
)
from hpo.report import figures
from hpo.report.data import EXTRA_CURVES, StudyData, best_epoch, epochs, load, metric_at, retries
from hpo.report.heldout import data_section, held_out_section
from hpo.report.render import Page

REPORTS_DIR = Path("runs/reports")


@dataclass
class Report:
    html: Path
    markdown: Path
    summary: dict[str, Any]
    csv: Path | None = None  # every trial (``hpo report``; ``hpo compare`` writes none)


def param_diff(defaults: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``param, old, new, change`` of the best params against the study's defaults.

    >>> param_diff({"lr": 0.001, "optimizer": "adamw"}, {"lr": 0.01, "optimizer": "adamw"})
    [{'param': 'lr', 'old': 0.001, 'new': 0.01, 'change': 'increase'}, {'param': 'optimizer', 'old': 'adamw', 'new': 'adamw', 'change': 'same'}]
    """
    rows = []
    for name in sorted(params):
        old, new = defaults.get(name), params[name]
        if name not in defaults:
            change = "no default"
        elif old == new:
            change = "same"
        elif _number(old) and _number(new):
            change = "increase" if new > old else "decrease"
        else:
            change = "changed"
        rows.append({"param": name, "old": old, "new": new, "change": change})
    return rows


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def proposal_outcomes(data: StudyData) -> list[dict[str, Any]]:
    """One row per proposal: the analysis, its params, and its trial's state, value and rank."""
    rows = []
    for a in data.analyses:
        for i, p in enumerate(a.proposals, 1):  # numbered from 1, as in the study note
            t = data.by_number.get(p.trial_number) if p.trial_number is not None else None
            rows.append({
                "analysis": a.id, "proposal": i, "params": p.params,
                "trial": t.number if t else None,
                "state": t.state.name if t else (p.status or "not run"),
                "value": t.value if t and t.state == TrialState.COMPLETE else None,
                "rank": data.rank_of(t.number) if t else None,
                "confidence": p.confidence,
            })
    return rows


def hit_rates(data: StudyData) -> dict[str, dict[str, Any]]:
    """Proposals against the sampler's own trials: how often each beat the best-so-far.

    A *hit* is a finished trial that, when it finished, improved on the best value of every
    trial that finished before it. Also the share landing in the top quarter of completed trials.
    """
    top_n = max(1, math.ceil(len(data.ranked) / 4))
    top = {t.number for t in data.ranked[:top_n]}
    groups: dict[str, dict[str, Any]] = {}
    prev: float | None = None
    for t, best in data.best_so_far():
        kind = "proposals" if t.number in data.proposal_trials else "sampler"
        g = groups.setdefault(kind, {"trials": 0, "hits": 0, "top_quarter": 0})
        g["trials"] += 1
        g["hits"] += int(best is not None and best != prev and t.value == best)
        g["top_quarter"] += int(t.number in top)
        prev = best
    for g in groups.values():
        g["hit_rate"] = g["hits"] / g["trials"] if g["trials"] else 0.0
        g["top_quarter_rate"] = g["top_quarter"] / g["trials"] if g["trials"] else 0.0
    return groups


# rows a long table shows (the rest are counted; every trial is in the report's CSV)
TABLE_ROWS = 20
# complete trials below which importances are shown with a caution
MIN_IMPORTANCE_TRIALS = 10
# analyses shown in full (the newest); earlier ones are counted
RECENT_ANALYSES = 10


def build_page(data: StudyData, top_k: int = 10) -> tuple[Page, dict[str, Any]]:
    s = data.summary()
    page = Page(f"Study report: {data.name}")
    _summary_section(page, data, s)
    data_section(page, read_data_facts(data.study.user_attrs))
    if data.is_multi_objective:  # no single best trial: the Pareto front
        _pareto_section(page, data, s)
    else:
        _best_section(page, data, s, top_k)
    s["test"] = held_out_section(page, read_test_results(data.system_attrs),
                             [t.number for t in data.ranked])

    page.heading("Figures")
    imp_fig, imp_note, imp = figures.importances(data)
    top_params = list(imp)[:3] or sorted({k for t in data.completed for k in t.params})[:3]
    s["importances"] = imp
    page.figure("Optimization history", *figures.optimization_history(data))
    page.figure("Learning curves", *figures.learning_curves(data))
    page.figure("Train and validation loss of the top trials", *figures.loss_curves(data))
    for key, label in EXTRA_CURVES:  # multi-task studies: MAE and within-k beside the objective
        if key != data.metric and any(metric_at(t, key, 1) is not None for t in data.trials):
            page.figure(f"Learning curves: {label}", *figures.learning_curves(data, key))
    page.figure("Hyperparameter importances", imp_fig, imp_note or _importance_caution(data))
    page.figure("Parallel coordinates", *figures.parallel_coordinates(data, list(imp) or None))
    page.figure("Slice of the top parameters", *figures.slices(data, top_params))
    page.figure("Contour of the two top parameters", *figures.contour(data, top_params))
    page.figure("Learning-rate schedule of the best trial", *figures.lr_schedule(data))
    page.figure("Timeline of the trials", *figures.timeline(data))
    page.figure("Empirical distribution of the objective (EDF)", *figures.edf(data))

    _pruned_section(page, data)
    _retries_section(page, data, s)
    _analyses_section(page, data, s)
    return page, s


def _summary_section(page: Page, data: StudyData, s: dict[str, Any]) -> None:
    """What the study is, how it ran, and what its analyses recommended."""
    stem = _stem(data.name)
    page.heading("Summary")
    page.link("The report with its figures:", f"{stem}.html", f"{stem}.html", html=False)
    s["description"] = data.description
    if data.description:  # the study file's own words; escaped like all text (render.esc/md)
        page.text(data.description)
    saving = (f"{s['epochs_trained']} of {s['epochs_without_pruning']} epochs "
              f"({s['epochs_saved_by_pruning']} epochs, {s['pruning_saving']:.1%}, saved by "
              f"pruning; {s['epochs_saved_by_early_stopping']} epochs, "
              f"{s['early_stopping_saving']:.1%}, by early stopping)")
    page.items([
        *data.setup(),
        ("storage", s["storage"]), ("objective", f"{s['direction']} {s['metric']}" if not
                                     data.is_multi_objective else ", ".join(
            f"{d.name.lower()} {n}" for d, n in zip(data.study.directions, data.objective_names))),
        ("sampler", s["sampler"]),
        ("pruner", s["pruner"] + (" (off: Optuna does not prune multi-objective studies)"
                                  if data.is_multi_objective and s["pruner"] != "none" else "")),
        ("budget", s["budget"]),
        ("trials", ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items()) or "none"),
        ("wall time", (f"{duration(s['wall_time_s'])} (first start to last finish); "
                       f"{duration(s['trial_time_s'])} summed over trials")),
        ("epochs trained", saving),
        ("generated", f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by hpo {_version()}"),
    ])
    page.link("Every trial (number, state, value, params, epochs, duration, source):",
              f"{stem}.csv", f"{stem}.csv")
    recommended = _recommendations(data)
    if recommended:
        page.heading("What the analyses recommended", 3)
        page.items(recommended)


def _version() -> str:
    try:
        return version("hpo")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _recommendations(data: StudyData) -> list[tuple[str, str]]:
    """A few lines on the analyses: how many, the newest one's summary and proposals, and
    the best trial a proposal ran."""
    if not data.analyses:
        return []
    latest = data.analyses[-1]
    who = ", ".join(sorted({a.analyst for a in data.analyses if a.analyst})) or "analyst"
    n_proposals = sum(len(a.proposals) for a in data.analyses)
    seen = f" after {latest.n_trials_seen} trials" if latest.n_trials_seen is not None else ""
    rows = [("analyses", (f"{len(data.analyses)} by {who}, with {n_proposals} proposals "
                          f"({len(data.proposal_trials)} trials ran one)")),
            (f"newest ({latest.id}{seen})", latest.summary or "-")]
    rows += [(f"its proposal {i}", params_text(p.params))
             for i, p in enumerate(latest.proposals, 1)]
    ranked = [t for t in data.ranked if t.number in data.proposal_trials]
    if ranked:
        t = ranked[0]
        rows.append(("best trial from a proposal",
                     (f"trial {t.number} ({data.source_of(t)}): {fmt(t.value)}, rank "
                      f"{data.rank_of(t.number)} of {len(data.ranked)}")))
    return rows


def _best_section(page: Page, data: StudyData, s: dict[str, Any], top_k: int) -> None:
    """The best trial (where it came from, its losses and checkpoint), its params against the
    study's defaults, and the top trials."""
    page.heading("Best trial")
    best = data.best
    if best is None:
        page.text("No completed trial yet.")
        return
    at = best_epoch(best)
    page.items([("trial", best.number), ("value", best.value), ("source", data.source_of(best)),
                *[(label, metric_at(best, k, at)) for k, label in data.loss_columns],
                ("epochs", epochs(best)), ("duration", _seconds(best)),
                ("checkpoint", data.checkpoint_of(best))])
    page.heading("Parameters against the study's defaults", 3)
    diff = param_diff(data.defaults(), best.params)
    s["best_diff"] = diff
    page.table(["param", "default", "best", "change"],
               [[d["param"], *fmt_pair(d["old"], d["new"]), d["change"]] for d in diff])
    top = data.ranked[:top_k]
    page.heading(f"Top {len(top)} trials", 3)
    names = sorted({k for t in top for k in t.params})
    metrics = [*data.loss_columns, *data.metric_columns]  # at the epoch each value comes from
    if metrics:
        page.text("Losses and metrics are those of the epoch each trial's value comes from; "
                  "click a header to sort.")
    page.table(["rank", "trial", "value", *[m[1] for m in metrics], "epochs", "duration",
                "source", *names],
               [[i, t.number, t.value, *[metric_at(t, m[0], best_epoch(t)) for m in metrics],
                 epochs(t), _seconds(t), data.source_of(t), *[t.params.get(n) for n in names]]
                for i, t in enumerate(top, 1)], nowrap=("source",))


def _pareto_section(page: Page, data: StudyData, s: dict[str, Any]) -> None:
    """A multi-objective study's Pareto front: the figure, and a table of its trials with
    every objective value (best first on the first objective, the validation metric)."""
    page.heading("Pareto front")
    names = data.objective_names
    front = sorted(data.pareto, key=lambda t: (-t.values[0] if data.maximize else t.values[0],
                                               t.number))
    s["pareto_trials"] = [t.number for t in front]
    if not front:
        page.text("No completed trial yet.")
        return
    directions = [d.name.lower() for d in data.study.directions]
    page.text(f"{len(front)} of {len(data.completed)} complete trials are Pareto-optimal for "
              + ", ".join(f"{d} {n}" for d, n in zip(directions, names))
              + "; `hpo export` picks one of them (--trial N, or --pick).")
    page.figure("Pareto front", *figures.pareto_front(data))
    params = sorted({k for t in front for k in t.params})
    page.table(["trial", *names, "epochs", "duration", "source", *params],
               [[t.number, *t.values, epochs(t), _seconds(t), data.source_of(t),
                 *[t.params.get(n) for n in params]] for t in front], nowrap=("source",))


def _seconds(t: FrozenTrial) -> Seconds | None:
    value = t.user_attrs.get(DURATION_ATTR)
    return Seconds(value) if isinstance(value, (int, float)) else None


def _importance_caution(data: StudyData) -> str:
    n = len(data.completed)
    if n >= MIN_IMPORTANCE_TRIALS:
        return ""
    return (f"caution: from only {n} complete trials; importances settle after "
            f"{MIN_IMPORTANCE_TRIALS} or more")


def _capped(page: Page, data: StudyData, headers: list[str], rows: list[list[Any]],
            what: str) -> None:
    """A table of at most :data:`TABLE_ROWS` rows (``rows`` come most relevant first); the
    count of the rest and a link to the CSV with every trial follow it."""
    page.table(headers, rows[:TABLE_ROWS], nowrap=("source",))
    if len(rows) > TABLE_ROWS:
        csv_name = f"{_stem(data.name)}.csv"
        page.link(f"and {len(rows) - TABLE_ROWS} more {what}; every trial is in", csv_name,
                  csv_name)


def _pruned_section(page: Page, data: StudyData) -> None:
    pruned = [t for t in data.trials if t.state == TrialState.PRUNED]
    if not pruned:
        return
    page.heading("Pruned trials", 3)
    sign = -1 if data.maximize else 1

    def last(t: FrozenTrial) -> float | None:
        return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None

    def relevance(t: FrozenTrial) -> tuple[int, float, int]:  # longest trained, best last value
        value = last(t)
        return (-epochs(t), sign * value if value is not None else math.inf, t.number)

    if len(pruned) > TABLE_ROWS:
        page.text(f"The {TABLE_ROWS} of {len(pruned)} pruned trials that trained longest.")
    _capped(page, data, ["trial", "epochs", "last value", "reason", "source"],
            [[t.number, epochs(t), last(t), t.user_attrs.get(PRUNE_REASON_ATTR),
              data.source_of(t)] for t in sorted(pruned, key=relevance)], "pruned trials")


def _retries_section(page: Page, data: StudyData, s: dict[str, Any]) -> None:
    s["retries"] = retries(data.trials)
    if not s["retries"]:  # trials whose worker died or was stopped, and how their retry went
        return
    page.heading("Retries and resumes", 3)
    page.text("A retry resumes from the newest checkpoint of the attempt it retries; epochs "
              "lost are the failed attempt's finished epochs that were trained again.")
    _capped(page, data, ["trial", "state", "retry of", "failed attempt ran on", "ran on",
                         "resumed from epoch", "epochs lost"],
            [[r["trial"], r["state"], r["retry_of"], r["failed_ran_on"], r["ran_on"],
              r["resumed_from_epoch"], r["epochs_lost"]] for r in s["retries"]], "retries")


def _analyses_section(page: Page, data: StudyData, s: dict[str, Any]) -> None:
    page.heading("Analyses")
    s["n_analyses"] = len(data.analyses)
    if not data.analyses:
        page.text("This study has no analyses (no LLM-informed sampler ran on it).")
    shown = data.analyses[-RECENT_ANALYSES:]
    if len(shown) < len(data.analyses):
        page.text(f"The newest {len(shown)} of {len(data.analyses)} analyses; the trials the "
                  "earlier ones proposed are in the tables below and the CSV (source).")
    for a in shown:  # HTML from these blocks; Markdown from the notes' renderer
        page.section(_analysis_page(a), analysis_markdown(a, level=3, table=True))
    outcomes = proposal_outcomes(data)
    s["proposal_outcomes"] = outcomes
    if outcomes:
        page.heading("Outcome of every proposal", 3)
        ordered = outcomes  # in the order they were proposed; when many, the best-ranked
        if len(outcomes) > TABLE_ROWS:
            page.text(f"The {TABLE_ROWS} best-ranked of {len(outcomes)} proposals.")
            ordered = sorted(outcomes, key=lambda o: math.inf if o["rank"] is None else o["rank"])
        _capped(page, data, ["analysis", "proposal", "trial", "state", "value",
                             f"rank of {len(data.ranked)}"],
                [[o["analysis"], o["proposal"], o["trial"], o["state"], o["value"], o["rank"]]
                 for o in ordered], "proposals")
    rates = hit_rates(data)
    s["hit_rates"] = rates
    if data.analyses or data.proposal_trials:
        page.heading("Hit rate: proposals against the sampler's trials", 3)
        page.text("A hit is a trial that improved on the best value of all trials finished "
                  "before it; top quarter is the share that ended among the best 25% of "
                  "completed trials.")
        page.table(["trials from", "trials", "hits", "hit rate", "top quarter"],
                   [[k, g["trials"], g["hits"], f"{g['hit_rate']:.0%}", f"{g['top_quarter_rate']:.0%}"]
                    for k, g in sorted(rates.items())])
    led = data.ledger
    s["ledger"] = vars(led)
    if not led.calls and not led.refused:  # a rules analyst or plain TPE: no LLM was asked
        return
    page.heading("LLM ledger", 3)
    page.items([("calls", led.calls), ("tokens", (f"{led.tokens} ({led.prompt_tokens} prompt, "
                                                   f"{led.completion_tokens} completion)")),
                ("failures", led.failures), ("cache hits", led.cache_hits),
                ("refused (no request: budget spent or no API key)", led.refused),
                ("cost", f"${led.cost:.4f}")])


def _analysis_page(a: Analysis) -> Page:
    """One analysis as HTML blocks: who, why, diagnoses and its proposals (numbered from 1)."""
    sub = Page(a.id)
    who = " / ".join(x for x in (a.analyst, a.model) if x)
    seen = f" after {a.n_trials_seen} trials" if a.n_trials_seen is not None else ""
    sub.heading(f"Analysis {a.id}{seen}" + (f" ({who})" if who else ""), 3)
    info = [("summary", a.summary)] if a.summary else []
    if a.trigger:
        info.append(("trigger", a.trigger))
    if a.fallback_reason:
        info.append(("rules took over because", a.fallback_reason))
    sub.items(info)
    for d in a.diagnosis:
        sub.items([("diagnosis", f"{d.state}: {d.summary}")])
        if d.evidence:
            sub.bullets([e.text() for e in d.evidence])
    if a.proposals:
        sub.table(list(PROPOSAL_COLUMNS),
                  [[i, params_text(p.params), p.rationale, p.expected_effect, p.risk,
                    p.confidence, p.status, p.trial_number]
                   for i, p in enumerate(a.proposals, 1)])
    return sub


def build_report(study: optuna.Study | str, storage_url: str | None = None,
                 out_dir: Path = REPORTS_DIR, top_k: int = 10) -> Report:
    """Write ``<out_dir>/<study>.html``, ``.md`` and ``.csv`` (every trial); return their paths
    and the key numbers. Reading only: the storage is never created or changed.

    Example:

        >>> import tempfile, optuna
        >>> folder = Path(tempfile.mkdtemp())
        >>> url = f"sqlite:///{folder}/hpo.db"
        >>> study = optuna.create_study(study_name="demo", storage=url, direction="maximize")
        >>> study.optimize(lambda t: -abs(t.suggest_float("lr", 1e-4, 0.1, log=True) - 0.01),
        ...                n_trials=5)
        >>> report = build_report("demo", url, out_dir=folder)
        >>> report.html.name, report.markdown.name, report.csv.name
        ('demo.html', 'demo.md', 'demo.csv')
        >>> report.summary["best_trial"] == study.best_trial.number
        True

    Args:
        study:
            A study, or its name in ``storage_url``.
        storage_url:
            The storage to read ``study`` from (by name); a missing study or storage is a
            ConfigError naming the studies there.
        out_dir:
            Where the three files go (created).
        top_k:
            Rows of the top-trials table.
    """
    data = load(study, storage_url)
    page, summary = build_page(data, top_k=top_k)
    html_path, md_path = page.write(Path(out_dir), _stem(data.name))
    csv_path = write_csv(data, Path(out_dir) / f"{_stem(data.name)}.csv")
    return Report(html_path, md_path, summary, csv_path)


def write_csv(data: StudyData, path: Path) -> Path:
    """Every trial, one row each: number, state, value, its losses and metrics at the epoch the
    value comes from, epochs, duration, source, start and end, and one ``params_NAME`` column
    per parameter (Optuna's ``trials_dataframe`` naming)."""
    curves = [*data.loss_columns, *data.metric_columns]
    names = sorted({k for t in data.trials for k in t.params})
    costs = data.objective_names[1:] if data.is_multi_objective else []  # latency_ms...
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["number", "state", "value", *costs, *[k for k, _ in curves], "epochs",
                      "duration_s", "source", "datetime_start", "datetime_complete",
                      *[f"params_{n}" for n in names]])
        for t in data.trials:
            at = best_epoch(t)
            more = data.values_of.get(t.number, [None] * (len(costs) + 1))[1:]
            out.writerow([t.number, t.state.name, _cell(t.value), *map(_cell, more),
                          *[_cell(metric_at(t, k, at)) for k, _ in curves], epochs(t),
                          _cell(t.user_attrs.get(DURATION_ATTR)), data.source_of(t),
                          _cell(t.datetime_start), _cell(t.datetime_complete),
                          *[_cell(t.params.get(n)) for n in names]])
    return path


def _cell(value: Any) -> Any:
    """A CSV cell: the full value (repr of a float), empty for None, ISO text for a time."""
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else value


def _stem(name: str) -> str:
    """A file name from a study name (which may hold any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return safe or "study"
