"""``hpo compare A B [C ...] [--group LABEL=GLOB]``: several studies side by side.

Best-so-far against finished trials, cumulative epochs and wall time; a table of final bests; and
groups of repeated studies (e.g. seeds, ``--group tpe=tpe-s*``) drawn as their median with a
min-max band. All studies must share one direction. Multi-objective studies (accuracy against
latency) are compared on their first objective, said in one line, and their Pareto fronts are
drawn together at the end.

    >>> parse_group("tpe=tpe-s*")
    ('tpe', 'tpe-s*')
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go

from hpo.errors import ConfigError
from hpo.markdown import Seconds
from hpo.record import read_test_results
from hpo.report.data import StudyData, epochs, load
from hpo.report.heldout import shown_result
from hpo.report.render import Page
from hpo.report.study_report import REPORTS_DIR, Report, _stem

AXES = (("trials", "finished trials"), ("epochs", "cumulative epochs trained"),
        ("seconds", "wall time since the study started"))
# columns of the table of final bests and their headers
FINAL_HEADERS = {"study": "study", "sampler": "sampler", "finished": "finished trials",
                 "best_value": "best value", "best_trial": "best trial",
                 "trials_to_best": "trials to the best", "epochs_to_best": "epochs to the best",
                 "epochs_trained": "epochs trained", "wall_time_s": "wall time"}
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def parse_group(spec: str) -> tuple[str, str]:
    """``LABEL=GLOB`` -> (label, glob); a bare glob is its own label."""
    label, sep, pattern = spec.partition("=")
    if not sep:
        return spec, spec
    if not label or not pattern:
        raise ConfigError("--group", "group", spec, "LABEL=GLOB, e.g. tpe=tpe-s*")
    return label, pattern


@dataclass
class Curve:
    """Best-so-far of one study against the three x axes."""

    name: str
    trials: list[float]
    epochs: list[float]
    seconds: list[float]
    best: list[float]  # NaN until the first completed trial

    def x(self, axis: str) -> list[float]:
        return getattr(self, axis)


def curve(data: StudyData) -> Curve:
    steps = data.best_so_far()
    starts = [t.datetime_start for t in data.trials if t.datetime_start]
    t0 = min(starts) if starts else None
    n_epochs, xs_t, xs_e, xs_s, ys = 0, [], [], [], []
    for i, (t, best) in enumerate(steps, 1):
        n_epochs += epochs(t)
        xs_t.append(float(i))
        xs_e.append(float(n_epochs))
        xs_s.append((t.datetime_complete - t0).total_seconds() if t0 and t.datetime_complete else 0.0)
        ys.append(float("nan") if best is None else float(best))
    return Curve(data.name, xs_t, xs_e, xs_s, ys)


def final_row(data: StudyData) -> dict[str, Any]:
    """The numbers of one study in the table of final bests."""
    s = data.summary()
    best = data.best
    reached = None
    if best is not None:
        order = [t.number for t in data.finished]
        upto = data.finished[: order.index(best.number) + 1]
        reached = {"trials": len(upto), "epochs": sum(epochs(t) for t in upto)}
    return {
        "study": data.name, "sampler": s["sampler"], "finished": len(data.finished),
        "best_value": s["best_value"], "best_trial": s["best_trial"],
        "trials_to_best": reached and reached["trials"], "epochs_to_best": reached and reached["epochs"],
        "epochs_trained": s["epochs_trained"], "wall_time_s": Seconds(s["wall_time_s"]),
        "description": data.description,
    }


def held_out_line(data: StudyData) -> str | None:
    """The held-out test result of a study's best evaluated trial in one line, None without."""
    best = shown_result(read_test_results(data.system_attrs), [t.number for t in data.ranked])
    return f"trial {best.trial}: {best.line()}" if best else None


def band(curves: list[Curve], axis: str, points: int = 100) -> tuple[np.ndarray, ...]:
    """Median, min and max best-so-far of ``curves`` on a common grid of ``axis``."""
    hi = max(max(c.x(axis), default=0.0) for c in curves)
    if axis == "trials":
        grid = np.arange(1, int(hi) + 1, dtype=float)
    else:
        grid = np.linspace(0.0, hi, points)
    rows = []
    for c in curves:
        xs, ys = np.asarray(c.x(axis)), np.asarray(c.best)
        idx = np.searchsorted(xs, grid, side="right") - 1  # step function: last value at <= x
        vals = np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan) if len(xs) else np.full_like(grid, np.nan)
        if axis == "trials":  # a study that ran fewer trials stops, it does not go on
            vals = np.where(grid <= (xs[-1] if len(xs) else 0), vals, np.nan)
        rows.append(vals)
    m = np.vstack(rows)
    with np.errstate(all="ignore"), _quiet():
        return grid, np.nanmedian(m, axis=0), np.nanmin(m, axis=0), np.nanmax(m, axis=0)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _figure(axis: str, label: str, singles: list[Curve], groups: dict[str, list[Curve]],
            metric: str, log_x: bool = False) -> go.Figure:
    """Best so far against ``axis``: each group as its median with a min-max band, each single
    study as its own line, all as steps (the best changes only when a trial improves on it)."""
    fig = go.Figure()
    color = iter(_COLORS * 10)
    for name, members in groups.items():
        _add_group(fig, name, members, axis, next(color))
    for cv in singles:
        xs, (ys,) = _changes(np.asarray(cv.x(axis)), np.asarray(cv.best))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=cv.name,
                                 line={"shape": "hv", "color": next(color)}))
    if axis == "seconds":  # in the unit that reads well: 1.2M s are 14 days
        every = [*singles, *(m for members in groups.values() for m in members)]
        size, unit = time_unit(max((x for c in every for x in c.seconds), default=0.0))
        for tr in fig.data:
            tr.x = [x / size for x in tr.x]
        label = f"{label} ({unit})"
    fig.update_layout(template="plotly_white", height=440, margin={"t": 30},
                      xaxis_title=label + (" (log scale)" if log_x else ""),
                      yaxis_title=f"best {metric}")
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def time_unit(seconds: float) -> tuple[float, str]:
    """The unit to draw up to ``seconds`` of wall time in: (its length in seconds, its name).

        >>> time_unit(90), time_unit(7200), time_unit(1.2e6)
        ((1, 'seconds'), (60, 'minutes'), (86400, 'days'))
    """
    for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if seconds >= 3 * size:
            return size, name
    return 1, "seconds"


def _add_group(fig: go.Figure, name: str, members: list[Curve], axis: str, color: str) -> None:
    """A group's min-max band (lines only: no marker at its corners) and median, as steps."""
    grid, med, lo, hi = band(members, axis)
    xs, (med, lo, hi) = _changes(grid, med, lo, hi)
    fig.add_trace(go.Scatter(x=xs, y=lo, mode="lines", line={"width": 0, "shape": "hv"},
                             hoverinfo="skip", showlegend=False, legendgroup=name))
    fig.add_trace(go.Scatter(x=xs, y=hi, mode="lines", line={"width": 0, "shape": "hv"},
                             fill="tonexty", fillcolor=_rgba(color, 0.18), hoverinfo="skip",
                             showlegend=False, legendgroup=name))
    fig.add_trace(go.Scatter(x=xs, y=med, mode="lines",
                             line={"color": color, "width": 3, "shape": "hv"},
                             name=f"{name} (median of {len(members)}, band min-max)",
                             legendgroup=name))


def _changes(xs: np.ndarray, *ys: np.ndarray) -> tuple[list[float], list[list[float]]]:
    """The points of step curves ``ys`` over ``xs`` where any of them changes, and the last
    point: the same steps drawn from a few points, however many trials. NaN points (before a
    first completed trial) are left out.

        >>> _changes(np.array([1., 2., 3., 4.]), np.array([np.nan, .5, .5, .5]))
        ([2.0, 4.0], [[0.5, 0.5]])
    """
    m = np.vstack(ys) if ys else np.empty((0, len(xs)))
    valid = ~np.isnan(m).all(axis=0)
    xs, m = xs[valid], m[:, valid]
    if not len(xs):
        return [], [[] for _ in ys]
    with np.errstate(invalid="ignore"):
        moved = np.any((m[:, 1:] != m[:, :-1]) & ~(np.isnan(m[:, 1:]) & np.isnan(m[:, :-1])),
                       axis=0)
    keep = np.concatenate(([True], moved))
    keep[-1] = True
    return xs[keep].tolist(), [row[keep].tolist() for row in m]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def resolve(storage_url: str, names: list[str], groups: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Expand study names (globs allowed) and ``LABEL=GLOB`` groups against the storage."""
    from hpo.redaction import redact
    from hpo.storage import open_existing_storage

    storage = open_existing_storage(storage_url)  # a mistyped SQLite path creates nothing
    known = sorted(optuna.get_all_study_names(storage))  # not summaries: those read every trial
    singles: list[str] = []
    for n in names:
        hits = fnmatch.filter(known, n) if any(ch in n for ch in "*?[") else [n] if n in known else []
        if not hits:
            raise ConfigError("storage", "study", n, f"a study in {redact(storage_url)}: "
                              f"{', '.join(known) or 'none'}")
        singles += [h for h in hits if h not in singles]
    grouped: dict[str, list[str]] = {}
    for spec in groups:
        label, pattern = parse_group(spec)
        hits = fnmatch.filter(known, pattern)
        if not hits:
            raise ConfigError("--group", label, pattern, f"a glob matching studies: {', '.join(known)}")
        grouped[label] = hits
    if len(singles) + len(grouped) < 2 and not any(len(v) > 1 for v in grouped.values()):
        raise ConfigError("compare", "studies", names + groups, "at least two studies or one group")
    return singles, grouped


def pareto_fronts(studies: list[StudyData]) -> go.Figure | None:
    """The Pareto fronts of multi-objective studies on one plot (first objective across,
    second up), each a staircase through its Pareto-optimal trials; None when no study has a
    complete trial. Studies whose first two objectives differ in name are each labelled with
    theirs.

        >>> pareto_fronts([]) is None
        True
    """
    fig = go.Figure()
    for i, data in enumerate(studies):
        front = sorted(data.pareto, key=lambda t: t.values[0])
        if not front:
            continue
        names = data.objective_names[:2]
        fig.add_trace(go.Scatter(
            x=[t.values[0] for t in front], y=[t.values[1] for t in front],
            mode="lines+markers", line={"shape": "hv", "color": _COLORS[i % len(_COLORS)]},
            name=data.name, text=[f"trial {t.number}" for t in front],
            hovertemplate=f"{data.name} %{{text}}<br>{names[0]} %{{x:.4g}}<br>"
                          f"{names[1]} %{{y:.4g}}<extra></extra>"))
    if not fig.data:
        return None
    first = studies[0].objective_names
    fig.update_layout(template="plotly_white", xaxis_title=first[0], yaxis_title=first[1],
                      height=440, margin={"t": 30})
    return fig


def build_compare(names: list[str], storage_url: str, groups: list[str] | None = None,
                  out_dir: Path = REPORTS_DIR, out_name: str | None = None,
                  log_x: bool = False) -> Report:
    """Write one HTML + Markdown comparing studies; return paths and the key numbers. Each
    study is read once.

    Example:

        >>> import tempfile, optuna
        >>> folder = Path(tempfile.mkdtemp())
        >>> url = f"sqlite:///{folder}/hpo.db"
        >>> for seed in (0, 1):
        ...     study = optuna.create_study(study_name=f"tpe-s{seed}", storage=url,
        ...                                 sampler=optuna.samplers.TPESampler(seed=seed))
        ...     study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=4)
        >>> report = build_compare([], url, groups=["tpe=tpe-s*"], out_dir=folder)
        >>> report.html.name, report.markdown.name
        ('compare-tpe.html', 'compare-tpe.md')

    Args:
        names:
            Studies drawn one by one (names or globs, e.g. ``llm-*``).
        storage_url:
            The storage they are in (read only).
        groups:
            ``LABEL=GLOB`` entries: the matching studies (repeated seeds) drawn as one median
            with an interquartile band.
        out_dir:
            Where the files go.
        out_name:
            The file stem (default ``compare-<studies and groups>``).
        log_x:
            Draw the x axes (finished trials, epochs, wall time) on a log scale, where the
            first trials are not squeezed against the axis.
    """
    singles, grouped = resolve(storage_url, names, groups or [])
    cache: dict[str, StudyData] = {}

    def get(n: str) -> StudyData:
        if n not in cache:
            cache[n] = load(n, storage_url)
        return cache[n]

    every = list(dict.fromkeys(singles + [n for v in grouped.values() for n in v]))
    directions = {get(n).maximize for n in every}
    if len(directions) > 1:
        raise ConfigError("compare", "direction", "mixed", "studies that all maximize or all minimize")
    metric = get(every[0]).metric
    title = "Comparison: " + ", ".join(singles + [f"{k} ({len(v)})" for k, v in grouped.items()])
    page = Page(title)
    page.items([("storage", get(every[0]).storage), ("objective",
                ("maximize " if directions.pop() else "minimize ") + metric)])
    several = [n for n in every if get(n).is_multi_objective]
    if several:
        said = (f"{', '.join(several)}: the tables and best-so-far curves follow the first "
                f"objective ({metric}); the Pareto fronts at the end show every objective")
        page.items([("several objectives", said)])

    rows = [final_row(get(n)) for n in every]
    page.heading("Final bests")
    page.table([FINAL_HEADERS[c] for c in FINAL_HEADERS],
               [[r[c] for c in FINAL_HEADERS] for r in rows])
    tested = [(n, held_out_line(get(n))) for n in every]
    if any(line for _, line in tested):  # the held-out test, where a study has one
        page.heading("Held-out test")
        page.items([(n, line or "not evaluated (no test split, or not yet)") for n, line in tested])
    for r, (_, line) in zip(rows, tested):
        r["test"] = line
    described = [(r["study"], r["description"]) for r in rows if r["description"]]
    if described:  # each study file's own words, escaped like all text
        page.heading("Study descriptions")
        page.items(described)

    group_rows = []
    for label, members in grouped.items():
        bests = [get(n).best.value for n in members if get(n).best is not None]
        group_rows.append({"group": label, "studies": len(members), "members": members,
                           "median_best": float(np.median(bests)) if bests else None,
                           "min_best": min(bests, default=None), "max_best": max(bests, default=None)})
    if group_rows:
        page.heading("Groups")
        page.table(["group", "studies", "median best", "min best", "max best", "members"],
                   [[g["group"], g["studies"], g["median_best"], g["min_best"], g["max_best"],
                     ", ".join(g["members"])] for g in group_rows])

    page.heading("Best so far")
    single_curves = [curve(get(n)) for n in singles]
    group_curves = {k: [curve(get(n)) for n in v] for k, v in grouped.items()}
    for axis, label in AXES:
        page.figure(f"Best so far against {label}",
                    _figure(axis, label, single_curves, group_curves, metric, log_x=log_x))

    if several:
        page.heading("Pareto fronts")
        names = get(several[0]).objective_names
        page.figure(f"{names[0]} against {names[1]}", pareto_fronts([get(n) for n in several]),
                    "each study's Pareto-optimal complete trials on its first two objectives")

    stem = out_name or _stem("compare-" + "-".join(singles + list(grouped)))[:120]
    html_path, md_path = page.write(Path(out_dir), stem)
    return Report(html_path, md_path, {"studies": rows, "groups": group_rows})
