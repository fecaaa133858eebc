"""``hpo report NAME``: one study as ``runs/reports/NAME.html`` (self-contained) and ``NAME.md``.

Sections: summary (storage, sampler, pruner, budget, trials by state, wall time, pruning saving),
best trial (value, params, diff from the study's defaults, top-k), figures, analyses (each
proposal's outcome and the hit rate of proposals against TPE's trials) and the LLM ledger.

    >>> import optuna
    >>> s = optuna.create_study(study_name="doc", direction="maximize")
    >>> s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    >>> html_path, md_path, summary = build_report(s, out_dir=Path("/tmp"))   # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.markdown import PROPOSAL_COLUMNS, analysis_markdown
from hpo.record import DURATION_ATTR, PRUNE_REASON_ATTR
from hpo.report import figures
from hpo.report.data import EXTRA_CURVES, StudyData, best_epoch, epochs, load, metric_at, retries
from hpo.report.render import Page

REPORTS_DIR = Path("runs/reports")


@dataclass
class Report:
    html: Path
    markdown: Path
    summary: dict[str, Any]


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
    by_number = {t.number: t for t in data.trials}
    rows = []
    for a in data.analyses:
        for i, p in enumerate(a.proposals):
            t = by_number.get(p.trial_number) if p.trial_number is not None else None
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


def build_page(data: StudyData, top_k: int = 10) -> tuple[Page, dict[str, Any]]:
    s = data.summary()
    page = Page(f"Study report: {data.name}")

    page.heading("Summary")
    s["description"] = data.description
    if data.description:  # the study file's own words; escaped like all text (render.esc/md)
        page.text(data.description)
    saving = (f"{s['epochs_trained']} of {s['epochs_without_pruning']} epochs "
              f"({s['epochs_saved_by_pruning']} epochs, {s['pruning_saving']:.1%}, saved by "
              f"pruning; {s['epochs_saved_by_early_stopping']} epochs, "
              f"{s['early_stopping_saving']:.1%}, by early stopping)")
    page.items([
        ("storage", s["storage"]), ("objective", f"{s['direction']} {s['metric']}"),
        ("sampler", s["sampler"]), ("pruner", s["pruner"]), ("budget", s["budget"]),
        ("trials", ", ".join(f"{k.lower()} {v}" for k, v in s["trials"].items()) or "none"),
        ("wall time", (f"{s['wall_time_s']:.1f} s (first start to last finish); "
                       f"{s['trial_time_s']:.1f} s summed over trials")),
        ("epochs trained", saving),
    ])

    page.heading("Best trial")
    best = data.best
    if best is None:
        page.text("No completed trial yet.")
    else:
        page.items([("trial", best.number), ("value", best.value),
                    ("epochs", epochs(best)), ("duration (s)", best.user_attrs.get(DURATION_ATTR))])
        page.heading("Parameters against the study's defaults", 3)
        diff = param_diff(data.defaults(), best.params)
        s["best_diff"] = diff
        page.table(["param", "default", "best", "change"],
                   [[d["param"], d["old"], d["new"], d["change"]] for d in diff])
        page.heading(f"Top {min(top_k, len(data.ranked))} trials", 3)
        names = sorted({k for t in data.ranked[:top_k] for k in t.params})
        metrics = data.metric_columns  # at the epoch each trial's value comes from
        if metrics:
            page.text("Metrics are those of the epoch each trial's value comes from.")
        page.table(["rank", "trial", "value", "epochs", "seconds", *[m[1] for m in metrics],
                    *names],
                   [[i, t.number, t.value, epochs(t), t.user_attrs.get(DURATION_ATTR),
                     *[metric_at(t, m[0], best_epoch(t)) for m in metrics],
                     *[t.params.get(n) for n in names]]
                    for i, t in enumerate(data.ranked[:top_k], 1)])

    page.heading("Figures")
    imp_fig, imp_note, imp = figures.importances(data)
    top_params = list(imp)[:3] or sorted({k for t in data.completed for k in t.params})[:3]
    s["importances"] = imp
    page.figure("Optimization history", *figures.optimization_history(data))
    page.figure("Learning curves", *figures.learning_curves(data))
    for key, label in EXTRA_CURVES:  # multi-task studies: MAE and within-k beside the objective
        if key != data.metric and any(metric_at(t, key, 1) is not None for t in data.trials):
            page.figure(f"Learning curves: {label}", *figures.learning_curves(data, key))
    page.figure("Hyperparameter importances", imp_fig, imp_note)
    page.figure("Parallel coordinates", *figures.parallel_coordinates(data, list(imp) or None))
    page.figure("Slice of the top parameters", *figures.slices(data, top_params))
    page.figure("Contour of the two top parameters", *figures.contour(data, top_params))
    page.figure("Learning-rate schedule of the best trial", *figures.lr_schedule(data))

    pruned = [t for t in data.trials if t.state == TrialState.PRUNED]
    if pruned:
        page.heading("Pruned trials", 3)
        page.table(["trial", "epochs", "last value", "reason"],
                   [[t.number, epochs(t), t.intermediate_values.get(max(t.intermediate_values))
                     if t.intermediate_values else None, t.user_attrs.get(PRUNE_REASON_ATTR)]
                    for t in pruned])

    s["retries"] = retries(data.trials)
    if s["retries"]:  # trials whose worker died or was stopped, and how their retry went
        page.heading("Retries and resumes", 3)
        page.text("A retry resumes from the newest checkpoint of the attempt it retries; epochs "
                  "lost are the failed attempt's finished epochs that were trained again.")
        page.table(["trial", "state", "retry of", "failed attempt ran on", "ran on",
                    "resumed from epoch", "epochs lost"],
                   [[r["trial"], r["state"], r["retry_of"], r["failed_ran_on"], r["ran_on"],
                     r["resumed_from_epoch"], r["epochs_lost"]] for r in s["retries"]])

    _analyses_section(page, data, s)
    return page, s


def _analyses_section(page: Page, data: StudyData, s: dict[str, Any]) -> None:
    page.heading("Analyses")
    s["n_analyses"] = len(data.analyses)
    if not data.analyses:
        page.text("This study has no analyses (no LLM-informed sampler ran on it).")
    for a in data.analyses:  # HTML from these blocks; Markdown from the notes' renderer
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
        for d in a.diagnoses:
            sub.items([("diagnosis", f"{d.state}: {d.summary}")])
            if d.evidence:
                sub.bullets(d.evidence)
        if a.proposals:
            sub.table(list(PROPOSAL_COLUMNS),
                      [[i, p.params, p.rationale, p.expected_effect, p.risk, p.confidence,
                        p.status, p.trial_number] for i, p in enumerate(a.proposals)])
        page.section(sub, analysis_markdown(a, level=3, table=True))
    outcomes = proposal_outcomes(data)
    s["proposal_outcomes"] = outcomes
    if outcomes:
        page.heading("Outcome of every proposal", 3)
        page.table(["analysis", "proposal", "trial", "state", "value",
                    f"rank of {len(data.ranked)}"],
                   [[o["analysis"], o["proposal"], o["trial"], o["state"], o["value"], o["rank"]]
                    for o in outcomes])
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
    page.heading("LLM ledger", 3)
    page.items([("calls", led.calls), ("tokens", (f"{led.tokens} ({led.prompt_tokens} prompt, "
                                                   f"{led.completion_tokens} completion)")),
                ("failures", led.failures), ("cache hits", led.cache_hits),
                ("refused (no request: budget spent or no API key)", led.refused),
                ("cost", f"${led.cost:.4f}")])


def build_report(study: optuna.Study | str, storage_url: str | None = None,
                 out_dir: Path = REPORTS_DIR, top_k: int = 10) -> Report:
    """Write ``<out_dir>/<study>.html`` and ``.md``; return their paths and the key numbers."""
    data = load(study, storage_url)
    page, summary = build_page(data, top_k=top_k)
    html_path, md_path = page.write(Path(out_dir), _stem(data.name))
    return Report(html_path, md_path, summary)


def _stem(name: str) -> str:
    """A file name from a study name (which may hold any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return safe or "study"
